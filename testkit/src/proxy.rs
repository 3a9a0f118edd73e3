//! A TCP proxy on loopback that can lose a reply on purpose: once armed with a byte pattern,
//! the next request containing it is forwarded, the server's reply to it is swallowed, and
//! the client's connection is closed, as when a network fails after the server acted. The
//! client cannot tell whether its command ran; the server did run it.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A running proxy; stops accepting when dropped.
pub struct LossyProxy {
    pub port: u16,
    armed: Arc<Mutex<Option<Vec<u8>>>>,
    lost: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

impl LossyProxy {
    /// Forwards 127.0.0.1:`port` (a free one) to 127.0.0.1:`upstream`.
    pub fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let armed: Arc<Mutex<Option<Vec<u8>>>> = Arc::default();
        let lost = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, l, s) = (armed.clone(), lost.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let (a, l, s) = (a.clone(), l.clone(), s.clone());
                        std::thread::spawn(move || relay_connection(client, upstream, a, l, s));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        LossyProxy { port, armed, lost, stop }
    }

    /// `redis://127.0.0.1:<port>/`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Loses the reply to the next request that contains `pattern`.
    pub fn lose_reply_to(&self, pattern: &[u8]) {
        *self.armed.lock().unwrap() = Some(pattern.to_vec());
    }

    /// How many replies were lost so far.
    pub fn lost(&self) -> usize {
        self.lost.load(Ordering::Relaxed)
    }
}

impl Drop for LossyProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn relay_connection(
    mut client: TcpStream,
    upstream: u16,
    armed: Arc<Mutex<Option<Vec<u8>>>>,
    lost: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) {
    let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)) else { return };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    // Set when a request matched: the server's next bytes are dropped and the client cut off.
    let swallow = Arc::new(AtomicBool::new(false));
    let (mut s_read, mut c_write) = (server.try_clone().unwrap(), client.try_clone().unwrap());
    let sw = swallow.clone();
    let st = stop.clone();
    let back = std::thread::spawn(move || {
        let mut buf = [0u8; 64 * 1024];
        let _ = s_read.set_read_timeout(Some(Duration::from_millis(200)));
        loop {
            if st.load(Ordering::Relaxed) {
                break;
            }
            match s_read.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if sw.load(Ordering::Relaxed) {
                        lost.fetch_add(1, Ordering::Relaxed);
                        let _ = c_write.shutdown(Shutdown::Both);
                        break;
                    }
                    if c_write.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
        let _ = s_read.shutdown(Shutdown::Both);
    });
    let mut buf = [0u8; 64 * 1024];
    let _ = client.set_read_timeout(Some(Duration::from_millis(200)));
    loop {
        if stop.load(Ordering::Relaxed) || swallow.load(Ordering::Relaxed) && back.is_finished() {
            break;
        }
        match client.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let hit = {
                    let mut a = armed.lock().unwrap();
                    match a.as_deref() {
                        Some(p) if contains(&buf[..n], p) => {
                            *a = None;
                            true
                        }
                        _ => false,
                    }
                };
                if hit {
                    swallow.store(true, Ordering::Relaxed);
                }
                if server.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = server.shutdown(Shutdown::Both);
    let _ = client.shutdown(Shutdown::Both);
    let _ = back.join();
}
