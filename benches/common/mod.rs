//! Set-up shared by the benches that need a populated data tree: the tree is built through
//! the commit core exactly as the server builds it (the same shape as examples/tree_rss.rs:
//! one parent per 1,000 znodes, `/p<parent>/k<index>`, open ACL).
// Each bench binary compiles this module on its own and uses a different part of it.
#![allow(dead_code)]

use std::sync::Arc;

use zoo::core::commit::{Attach, CommitCore, CoreConfig, WriteRequest};
use zoo::core::sessions::ConnectionRef;
use zoo::jute::records::{CreateRequest, Id, Request, opcode};

/// A commit core holding `nodes` znodes, and who wrote them.
pub struct BuiltTree {
    pub core: CommitCore,
    pub ctx: Context,
}

/// The session and identities that wrote the tree, and its shape. Kept apart from the core so
/// a bench can borrow it while it mutates the core.
#[derive(Clone)]
pub struct Context {
    pub session_id: i64,
    pub auth: Arc<Vec<Id>>,
    pub parents: usize,
    pub nodes: usize,
}

impl Context {
    /// Path of the `index`-th znode created by `build_tree`.
    pub fn path(&self, index: usize) -> String {
        format!("/p{:06}/k{index:09}", index % self.parents)
    }

    /// Path of the `parent`-th parent.
    pub fn parent(&self, parent: usize) -> String {
        format!("/p{:06}", parent % self.parents)
    }

    /// A write from the builder's session, as a shard would hand it to the commit executor.
    pub fn write(&self, request: Request) -> WriteRequest {
        WriteRequest {
            session_id: self.session_id,
            xid: 1,
            request,
            auth: self.auth.clone(),
        }
    }
}

impl BuiltTree {
    /// Applies one write and checks that it succeeded.
    pub fn apply(&mut self, request: Request) {
        let write = self.ctx.write(request);
        let outcome = self.core.process_write(write, 0, &mut Vec::new());
        assert_eq!(outcome.reply.err, 0, "set-up write failed");
    }
}

/// A persistent create of `path` holding `data`.
pub fn create_request(path: String, data: Option<Vec<u8>>) -> Request {
    Request::Create(CreateRequest {
        opcode: opcode::CREATE,
        path,
        data: data.map(Into::into),
        acl: zoo::core::acl::open_acl_unsafe().into(),
        flags: 0,
        ttl: -1,
    })
}

/// Builds a tree of `nodes` znodes with `value_bytes`-byte values.
pub fn build_tree(nodes: usize, value_bytes: usize) -> BuiltTree {
    let mut core = CommitCore::new(CoreConfig::default(), 0);
    let owner = ConnectionRef {
        shard: 0,
        connection_id: 1,
    };
    let (Attach::Attached { session_id, .. }, _) =
        core.create_session(30_000, [0; 16], owner, 0, &mut Vec::new())
    else {
        panic!("a fresh core refused a session");
    };
    let mut built = BuiltTree {
        core,
        ctx: Context {
            session_id,
            auth: Arc::new(vec![Id::new("ip", "127.0.0.1")]),
            parents: (nodes / 1000).max(1),
            nodes,
        },
    };
    for p in 0..built.ctx.parents {
        let path = built.ctx.parent(p);
        built.apply(create_request(path, None));
    }
    for i in 0..nodes {
        let path = built.ctx.path(i);
        built.apply(create_request(path, Some(vec![7u8; value_bytes])));
    }
    built
}

/// xorshift64*: a small deterministic generator, so runs pick the same paths.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        XorShift(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}
