//! The I/O-free core: data tree, sessions, watches, ACL checks and request processing.
//! Nothing here touches a socket, a file or a clock; the runtime in `server` feeds it
//! requests and the current time, and carries out what it returns.

pub mod acl;
pub mod children;
pub mod commit;
pub mod frozen;
pub mod membership;
pub mod path;
pub mod path_map;
pub mod prefetch;
pub mod read;
pub mod sessions;
pub mod tree;
pub mod txn;
pub mod watches;
