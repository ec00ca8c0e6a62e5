//! A trivial ZooKeeper-protocol server that answers every request at once with a canned reply
//! (getData → fixed data and stat), so the load generator's own ceiling can be measured: with
//! the server on other cores, what the loadgen reaches against it is what one loadgen core can
//! drive.

use std::net::SocketAddr;
use std::rc::Rc;

use futures_lite::io::AsyncWriteExt;
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};

use crate::conn::{ConnError, FrameBuffer};
use crate::limits;
use crate::protocol::{self, Cursor, STAT_BYTES, opcode, put_bool, put_bytes, put_i32, put_i64};
use crate::runner::{allowed_cpus, raise_memlock_limit};

/// Replies prepared once and copied for every request.
struct Canned {
    /// GetDataResponse: data + stat.
    get_data: Vec<u8>,
    /// A Stat alone (exists, setData).
    stat: Vec<u8>,
}

impl Canned {
    fn new(data_size: usize) -> Canned {
        let mut stat = Vec::with_capacity(STAT_BYTES);
        put_i64(&mut stat, 1); // czxid
        put_i64(&mut stat, 1); // mzxid
        put_i64(&mut stat, 0); // ctime
        put_i64(&mut stat, 0); // mtime
        put_i32(&mut stat, 0); // version
        put_i32(&mut stat, 0); // cversion
        put_i32(&mut stat, 0); // aversion
        put_i64(&mut stat, 0); // ephemeralOwner
        put_i32(&mut stat, data_size as i32); // dataLength
        put_i32(&mut stat, 0); // numChildren
        put_i64(&mut stat, 1); // pzxid
        let mut get_data = Vec::with_capacity(4 + data_size + STAT_BYTES);
        put_bytes(&mut get_data, &vec![b'x'; data_size]);
        get_data.extend_from_slice(&stat);
        Canned { get_data, stat }
    }
}

/// Appends the reply to one request frame; returns false when the connection must close after
/// the flush (closeSession).
fn answer(canned: &Canned, frame: &[u8], out: &mut Vec<u8>) -> Result<bool, ConnError> {
    let mut c = Cursor::new(frame);
    let request_xid = c.i32()?;
    let op = c.i32()?;
    let at = protocol::begin_frame(out);
    put_i32(out, request_xid);
    put_i64(out, 1);
    put_i32(out, 0);
    let mut keep_open = true;
    match op {
        opcode::GET_DATA => out.extend_from_slice(&canned.get_data),
        opcode::EXISTS | opcode::SET_DATA => out.extend_from_slice(&canned.stat),
        opcode::GET_CHILDREN => put_i32(out, 0),
        opcode::CREATE => {
            let path = c.bytes()?;
            // CreateRequest ends with its int flags.
            let flags = match frame.len().checked_sub(4) {
                Some(i) => i32::from_be_bytes([frame[i], frame[i + 1], frame[i + 2], frame[i + 3]]),
                None => 0,
            };
            if flags & 2 != 0 {
                let mut named = path.to_vec();
                named.extend_from_slice(b"0000000001");
                put_bytes(out, &named);
            } else {
                put_bytes(out, path);
            }
        }
        opcode::MULTI => {
            put_i32(out, -1);
            put_bool(out, true);
            put_i32(out, -1);
        }
        opcode::CLOSE_SESSION => keep_open = false,
        _ => {} // delete, ping and the rest: the header alone
    }
    protocol::end_frame(out, at);
    Ok(keep_open)
}

fn connect_response(frame: &[u8], session_id: i64, out: &mut Vec<u8>) -> Result<(), ConnError> {
    let mut c = Cursor::new(frame);
    let _protocol_version = c.i32()?;
    let _last_zxid = c.i64()?;
    let timeout = c.i32()?;
    let _session = c.i64()?;
    let _passwd = c.bytes()?;
    let read_only_byte = c.remaining() > 0;
    let at = protocol::begin_frame(out);
    put_i32(out, 0);
    put_i32(out, timeout);
    put_i64(out, session_id);
    put_bytes(out, &[0; 16]);
    if read_only_byte {
        put_bool(out, false);
    }
    protocol::end_frame(out, at);
    Ok(())
}

async fn serve_connection(
    canned: Rc<Canned>,
    mut stream: TcpStream,
    session_id: i64,
) -> Result<(), ConnError> {
    let _ = stream.set_nodelay(true);
    let mut frames = FrameBuffer::new(limits::REQUEST_FRAME_BYTES_MAX);
    let mut out = Vec::with_capacity(limits::READ_CHUNK_BYTES);
    let mut connected = false;
    loop {
        let mut keep_open = true;
        while let Some(range) = frames.next_frame()? {
            let frame = frames.frame(range);
            if connected {
                keep_open = answer(&canned, frame, &mut out)?;
                if !keep_open {
                    break;
                }
            } else {
                connect_response(frame, session_id, &mut out)?;
                connected = true;
            }
            if out.len() >= limits::TRIVIAL_OUTPUT_BYTES_MAX {
                stream.write_all(&out).await?;
                out.clear();
            }
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        if !keep_open || frames.fill(&mut stream).await? == 0 {
            return Ok(());
        }
    }
}

/// Serves on `bind:port` with `cores` executors until the process is killed.
pub fn serve(
    bind: &str,
    port: u16,
    cores: usize,
    data_size: usize,
    pin: bool,
) -> Result<(), String> {
    raise_memlock_limit();
    let address: SocketAddr = format!("{bind}:{port}")
        .parse()
        .map_err(|e| format!("bad listen address {bind}:{port}: {e}"))?;
    let cpus = allowed_cpus();
    let (bound_tx, bound_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let mut handles = Vec::new();
    for core in 0..cores.clamp(1, limits::CORES_MAX) {
        let placement = if pin {
            Placement::Fixed(cpus[core % cpus.len()])
        } else {
            Placement::Unbound
        };
        let bound_tx = bound_tx.clone();
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("trivial-{core}"))
            .io_memory(limits::EXECUTOR_IO_MEMORY_BYTES)
            .spawn(move || async move {
                let listener = match TcpListener::bind(address) {
                    Ok(l) => {
                        let _ = bound_tx.send(Ok(()));
                        l
                    }
                    Err(e) => {
                        let _ = bound_tx.send(Err(format!("cannot listen on {address}: {e}")));
                        return;
                    }
                };
                let canned = Rc::new(Canned::new(data_size));
                let mut next_session = ((core as i64) << 48) + 1;
                loop {
                    match listener.accept().await {
                        Ok(stream) => {
                            let canned = canned.clone();
                            let id = next_session;
                            next_session += 1;
                            glommio::spawn_local(async move {
                                let _ = serve_connection(canned, stream, id).await;
                            })
                            .detach();
                        }
                        Err(e) => {
                            eprintln!("trivial-server: accept failed: {e}");
                            glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
                        }
                    }
                }
            })
            .map_err(|e| format!("cannot start executor {core}: {e}"))?;
        handles.push(handle);
    }
    drop(bound_tx);
    for _ in 0..handles.len() {
        bound_rx
            .recv()
            .map_err(|_| "an executor stopped before listening".to_string())??;
    }
    eprintln!(
        "trivial-server: listening on {address} with {} core(s), {data_size}-byte getData replies",
        handles.len()
    );
    for handle in handles {
        let _ = handle.join();
    }
    Ok(())
}
