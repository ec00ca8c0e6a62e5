//! secureClientPort: TLS with ZooKeeper's ssl.* keys, checked with a client written by others
//! (Python's ssl module over OpenSSL). The JKS path is covered by kazoo's TestSSLClient in
//! scripts/conformance and by the unit tests of src/tls/jks.rs.

mod common;

use std::process::Command;

use common::*;

#[test]
fn a_pem_keystore_serves_the_protocol_over_tls_beside_the_plain_port() {
    let dir = TempDir::new("tls");
    let key = dir.path().join("key.pem");
    let cert = dir.path().join("cert.pem");
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(status.status.success(), "{status:?}");
    let store = dir.path().join("keystore.pem");
    let mut both = std::fs::read(&key).unwrap();
    both.extend(std::fs::read(&cert).unwrap());
    std::fs::write(&store, both).unwrap();
    let secure = free_port();
    let server = ZooServer::start(&[
        &format!("secureClientPort={secure}"),
        &format!("ssl.keyStore.location={}", store.display()),
        "ssl.keyStore.type=PEM",
    ]);
    let script = format!(
        "import socket, ssl\n\
         ctx = ssl.create_default_context(cafile='{}')\n\
         s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', {secure})), server_hostname='localhost')\n\
         s.sendall(b'ruok')\n\
         out = b''\n\
         while True:\n\
         \x20   b = s.recv(100)\n\
         \x20   if not b: break\n\
         \x20   out += b\n\
         print(out.decode(), s.version())\n",
        cert.display()
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("imok TLSv1."),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The plain port keeps working beside it.
    let mut c = RawClient::connect(server.port());
    c.create("/plain", b"", 0).unwrap();
}
