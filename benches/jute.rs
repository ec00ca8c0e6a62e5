//! Jute encode and decode of the records on zoo's hot path, to show what the wire format costs
//! per request next to the tree and the log: a getData reply (ReplyHeader + 100-byte data +
//! Stat, what a shard encodes for every read), a create request (RequestHeader + path, data,
//! ACL, flags, what a shard decodes for every create), a 20-op multi (5 each of create,
//! setData, check and delete) and a ConnectRequest.
//!
//! Decoding goes through the public API the server uses (`jute::Reader`,
//! `jute::records::Request::decode`, `Stat::decode` ...), with the server's default bound on
//! string lengths (jute.maxbuffer). Encoding of requests, which only clients do, is written
//! here with `jute::Writer` the way a client lays them out. Throughput is in wire bytes.
//!
//! `cargo bench --bench jute`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use zoo::jute::records::{
    Acl, ConnectRequest, ReplyHeader, Request, Stat, encode_acls, encode_multi_header, opcode,
};
use zoo::jute::{Reader, Writer};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The bound a shard applies to strings and buffers: twice ZooKeeper's default jute.maxbuffer.
const STRING_BYTES_MAX: usize = 2 * 1_048_575;
const XID: i32 = 42;

fn typical_stat() -> Stat {
    Stat {
        czxid: 0x1_0000_0123,
        mzxid: 0x1_0000_4567,
        ctime: 1_700_000_000_000,
        mtime: 1_700_000_123_456,
        version: 17,
        cversion: 0,
        aversion: 0,
        ephemeral_owner: 0,
        data_length: 100,
        num_children: 0,
        pzxid: 0x1_0000_0123,
    }
}

fn open_acl() -> Vec<Acl> {
    zoo::core::acl::open_acl_unsafe()
}

fn encode_get_data_reply(data: &[u8], stat: &Stat, out: &mut Vec<u8>) {
    ReplyHeader {
        xid: XID,
        zxid: 0x1_0000_9999,
        err: 0,
    }
    .encode(out);
    out.put_buffer(data);
    stat.encode(out);
}

fn decode_get_data_reply(bytes: &[u8]) -> (ReplyHeader, Vec<u8>, Stat) {
    let mut r = Reader::new(bytes, STRING_BYTES_MAX);
    let header = ReplyHeader::decode(&mut r).expect("header");
    let data = r.read_buffer_vec().expect("data");
    let stat = Stat::decode(&mut r).expect("stat");
    (header, data, stat)
}

fn put_create_body(path: &str, data: &[u8], acl: &[Acl], out: &mut Vec<u8>) {
    out.put_ustring(path);
    out.put_buffer(data);
    encode_acls(acl, out);
    out.put_i32(0);
}

/// RequestHeader (xid, type) and a create body: the frame a shard decodes, without its length.
fn encode_create_request(path: &str, data: &[u8], acl: &[Acl], out: &mut Vec<u8>) {
    out.put_i32(XID);
    out.put_i32(opcode::CREATE);
    put_create_body(path, data, acl, out);
}

/// The paths of the multi's ops, in groups of (create, setData, check, delete).
fn multi_paths() -> Vec<[String; 4]> {
    (0..5)
        .map(|i| {
            [
                format!("/app/jobs/job-{i:010}"),
                format!("/app/state/shard-{i:04}"),
                format!("/app/locks/lock-{i:04}"),
                format!("/app/queue/item-{i:010}"),
            ]
        })
        .collect()
}

/// RequestHeader and a multi of 20 ops: 5 each of create, setData, check and delete.
fn encode_multi_request(paths: &[[String; 4]], data: &[u8], acl: &[Acl], out: &mut Vec<u8>) {
    out.put_i32(XID);
    out.put_i32(opcode::MULTI);
    for [create, set, check, delete] in paths {
        encode_multi_header(opcode::CREATE, false, -1, out);
        put_create_body(create, data, acl, out);
        encode_multi_header(opcode::SET_DATA, false, -1, out);
        out.put_ustring(set);
        out.put_buffer(data);
        out.put_i32(-1);
        encode_multi_header(opcode::CHECK, false, -1, out);
        out.put_ustring(check);
        out.put_i32(3);
        encode_multi_header(opcode::DELETE, false, -1, out);
        out.put_ustring(delete);
        out.put_i32(-1);
    }
    encode_multi_header(-1, true, -1, out);
}

/// What a shard does with a frame body: RequestHeader, then the request.
fn decode_request(bytes: &[u8]) -> (i32, Request) {
    let mut r = Reader::new(bytes, STRING_BYTES_MAX);
    let xid = r.read_i32().expect("xid");
    let op = r.read_i32().expect("type");
    let request = Request::decode(op, &mut r).expect("request");
    (xid, request)
}

fn connect_request() -> ConnectRequest {
    ConnectRequest {
        protocol_version: 0,
        last_zxid_seen: 0x1_0000_0042,
        timeout_ms: 30_000,
        session_id: 0x0100_0000_0000_0007,
        password: vec![0x5a; 16],
        read_only: Some(false),
    }
}

fn jute(c: &mut Criterion) {
    let data = vec![7u8; 100];
    let acl = open_acl();
    let stat = typical_stat();
    let mut group = c.benchmark_group("jute");
    let mut out = Vec::with_capacity(4096);

    // getData reply.
    encode_get_data_reply(&data, &stat, &mut out);
    let reply = out.clone();
    assert_eq!(decode_get_data_reply(&reply).2, stat);
    group.throughput(Throughput::Bytes(reply.len() as u64));
    group.bench_function("getData_reply/encode", |b| {
        b.iter(|| {
            out.clear();
            encode_get_data_reply(black_box(&data), black_box(&stat), &mut out);
            black_box(out.len())
        })
    });
    group.bench_function("getData_reply/decode", |b| {
        b.iter(|| black_box(decode_get_data_reply(black_box(&reply))))
    });

    // Create request.
    let path = "/app/jobs/job-0000001234";
    out.clear();
    encode_create_request(path, &data, &acl, &mut out);
    let create = out.clone();
    assert!(matches!(decode_request(&create).1, Request::Create(_)));
    group.throughput(Throughput::Bytes(create.len() as u64));
    group.bench_function("create_request/encode", |b| {
        b.iter(|| {
            out.clear();
            encode_create_request(black_box(path), black_box(&data), &acl, &mut out);
            black_box(out.len())
        })
    });
    group.bench_function("create_request/decode", |b| {
        b.iter(|| black_box(decode_request(black_box(&create))))
    });

    // 20-op multi.
    let paths = multi_paths();
    out.clear();
    encode_multi_request(&paths, &data, &acl, &mut out);
    let multi = out.clone();
    match decode_request(&multi).1 {
        Request::Multi(ops) => assert_eq!(ops.len(), 20),
        other => panic!("decoded {other:?}"),
    }
    group.throughput(Throughput::Bytes(multi.len() as u64));
    group.bench_function("multi20/encode", |b| {
        b.iter(|| {
            out.clear();
            encode_multi_request(&paths, black_box(&data), &acl, &mut out);
            black_box(out.len())
        })
    });
    group.bench_function("multi20/decode", |b| {
        b.iter(|| black_box(decode_request(black_box(&multi))))
    });

    // ConnectRequest.
    let connect = connect_request();
    out.clear();
    connect.encode(&mut out);
    let connect_bytes = out.clone();
    assert_eq!(
        ConnectRequest::decode(&mut Reader::new(&connect_bytes, STRING_BYTES_MAX)).unwrap(),
        connect
    );
    group.throughput(Throughput::Bytes(connect_bytes.len() as u64));
    group.bench_function("connect_request/encode", |b| {
        b.iter(|| {
            out.clear();
            black_box(&connect).encode(&mut out);
            black_box(out.len())
        })
    });
    group.bench_function("connect_request/decode", |b| {
        b.iter(|| {
            let mut r = Reader::new(black_box(&connect_bytes), STRING_BYTES_MAX);
            black_box(ConnectRequest::decode(&mut r).expect("connect"))
        })
    });

    group.finish();
}

criterion_group!(benches, jute);
criterion_main!(benches);
