//! `gust-loadgen relay`: the least any proxy can do on this kernel. One thread, one
//! epoll set (through mio), and for each TCP connection accepted on 127.0.0.1:PORT one
//! Unix socket connection to the server behind it; bytes are copied as they come, both
//! ways, with no HTTP parsing, pooling, timers or tasks. A request costs it one read
//! and one write each way plus its share of `epoll_wait`: the system calls every
//! proxy makes, so its CPU per call is the kernel's part of any proxy here, and its
//! latency what one extra hop costs on this machine.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::path::Path;

use mio::net::{TcpListener, TcpStream, UnixStream};
use mio::{Events, Interest, Poll, Token};

const LISTENER: Token = Token(0);

/// A client connection and its upstream. Tokens: client `2n`, upstream `2n + 1`.
struct Pair {
    client: TcpStream,
    upstream: UnixStream,
}

/// Relays until the process is killed.
pub(crate) fn relay(port: u16, to: &Path) -> anyhow::Result<()> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(256);
    let mut listener = TcpListener::bind(std::net::SocketAddr::from(([127, 0, 0, 1], port)))?;
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut pairs: HashMap<usize, Pair> = HashMap::new();
    let mut next = 1usize;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        poll.poll(&mut events, None)?;
        for event in &events {
            if event.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut client, _)) => {
                            client.set_nodelay(true)?;
                            let mut upstream = UnixStream::connect(to)?;
                            let n = next;
                            next += 1;
                            poll.registry().register(&mut client, Token(2 * n), Interest::READABLE)?;
                            poll.registry().register(&mut upstream, Token(2 * n + 1), Interest::READABLE)?;
                            pairs.insert(n, Pair { client, upstream });
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e.into()),
                    }
                }
                continue;
            }
            let (n, from_client) = (event.token().0 / 2, event.token().0 % 2 == 0);
            let Some(pair) = pairs.get_mut(&n) else { continue };
            let open = if from_client {
                copy(&mut pair.client, &mut pair.upstream, &mut buf)
            } else {
                copy(&mut pair.upstream, &mut pair.client, &mut buf)
            };
            if !open && let Some(mut pair) = pairs.remove(&n) {
                poll.registry().deregister(&mut pair.client)?;
                poll.registry().deregister(&mut pair.upstream)?;
            }
        }
    }
}

/// Copies what `from` has to `to`; false once either side is closed or broken. The
/// messages of a closed-loop client are small, so a write of what was read completes
/// (it is retried on `WouldBlock` rather than buffered: a floor, not a product).
fn copy(from: &mut impl Read, to: &mut impl Write, buf: &mut [u8]) -> bool {
    loop {
        let n = match from.read(buf) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return false,
        };
        let mut out = buf.get(..n).unwrap_or_default();
        while !out.is_empty() {
            match to.write(out) {
                Ok(w) => out = out.get(w..).unwrap_or_default(),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                    std::thread::yield_now()
                }
                Err(_) => return false,
            }
        }
        if n < buf.len() {
            // A short read emptied the socket: skip the read that would say WouldBlock.
            return true;
        }
    }
}
