//! The listening sockets of the runtime threads.
//!
//! Each runtime thread accepts its own connections. Sharing one listening socket between them
//! let whichever thread was awake take a whole burst: in three of five fresh starts, all 64 of
//! wrk's connections went to one thread and stayed there, leaving the other runtime idle. On
//! Linux each thread gets a socket of its own on the one port (`SO_REUSEPORT`), and the kernel
//! spreads new connections over them by their addresses. Elsewhere (where `SO_REUSEPORT` does
//! not balance) the threads share one socket as before.

use std::io;
use std::net::SocketAddr;

/// The pending connections a socket holds before the kernel refuses more.
#[cfg(target_os = "linux")]
const BACKLOG: u32 = 1024;

/// A runtime thread's socket, bound and not yet listening.
#[derive(Debug)]
pub enum Bound {
    /// A socket of its own on the shared port.
    #[cfg(target_os = "linux")]
    Own(tokio::net::TcpSocket),
    /// A handle on the one socket all threads accept from.
    Shared(std::net::TcpListener),
}

impl Bound {
    /// Starts listening, registered with the runtime this is called on: the one that will
    /// accept.
    ///
    /// # Errors
    /// When the socket cannot listen or be registered.
    pub fn listen(self) -> io::Result<tokio::net::TcpListener> {
        match self {
            #[cfg(target_os = "linux")]
            Bound::Own(socket) => socket.listen(BACKLOG),
            Bound::Shared(listener) => tokio::net::TcpListener::from_std(listener),
        }
    }
}

/// Binds `count` sockets (at least one) for `addr` (`HOST:PORT`; port 0 picks a free port,
/// the same for all), and gives the address they are bound to.
///
/// A plain bind comes first and fails, as it always did, when anything holds the port: another
/// uniproxy too, whose `SO_REUSEPORT` sockets would otherwise take this one's in silently and
/// share its connections. Should the sockets of their own fail (a kernel that emulates Linux
/// and refuses `SO_REUSEPORT`), the threads share one socket, as elsewhere.
///
/// # Errors
/// When `addr` does not resolve or a socket cannot be bound.
pub fn bind(addr: &str, count: usize) -> io::Result<(SocketAddr, Vec<Bound>)> {
    #[cfg(target_os = "linux")]
    let own: Option<OwnSockets> = Some(own_sockets);
    // Elsewhere `SO_REUSEPORT` does not spread connections: never asked for.
    #[cfg(not(target_os = "linux"))]
    let own: Option<OwnSockets> = None;
    bind_with(addr, count, own)
}

/// Makes `count` sockets of their own for the threads, bound to the address given.
type OwnSockets = fn(SocketAddr, usize) -> io::Result<Vec<Bound>>;

/// [`bind`], with the way to make the threads' own sockets given (`None`: share one).
fn bind_with(
    addr: &str,
    count: usize,
    own: Option<OwnSockets>,
) -> io::Result<(SocketAddr, Vec<Bound>)> {
    let first = std::net::TcpListener::bind(addr)?;
    let local = first.local_addr()?;
    let count = count.max(1);
    let first = match own {
        Some(own) if count > 1 => {
            drop(first);
            match own(local, count) {
                Ok(own) => return Ok((local, own)),
                Err(_) => std::net::TcpListener::bind(local)?,
            }
        }
        _ => first,
    };
    first.set_nonblocking(true)?;
    let mut shared = Vec::with_capacity(count);
    for _ in 1..count {
        shared.push(Bound::Shared(first.try_clone()?));
    }
    shared.push(Bound::Shared(first));
    Ok((local, shared))
}

/// `count` sockets bound to `local` with `SO_REUSEPORT` (Linux).
#[cfg(target_os = "linux")]
fn own_sockets(local: SocketAddr, count: usize) -> io::Result<Vec<Bound>> {
    let mut own = Vec::with_capacity(count);
    for _ in 0..count {
        let socket = if local.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        // As std's bind does on Unix, and what lets the sockets share the port.
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.bind(local)?;
        own.push(Bound::Own(socket));
    }
    Ok(own)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_in_use_is_refused_and_port_zero_is_one_port_for_all() {
        let (local, bound) = bind("127.0.0.1:0", 2).unwrap();
        assert_ne!(local.port(), 0);
        assert_eq!(bound.len(), 2);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listeners: Vec<_> = bound.into_iter().map(|b| b.listen().unwrap()).collect();
            for l in &listeners {
                assert_eq!(l.local_addr().unwrap(), local);
            }
            // Another proxy started on the same port fails, as with one socket.
            let again = bind(&local.to_string(), 2).unwrap_err();
            assert_eq!(again.kind(), io::ErrorKind::AddrInUse, "{again}");
        });
    }

    #[test]
    fn new_connections_reach_every_thread_s_socket() {
        let (local, bound) = bind("127.0.0.1:0", 2).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let per_socket = rt.block_on(async move {
            let listeners: Vec<_> = bound.into_iter().map(|b| b.listen().unwrap()).collect();
            // A burst, as a client's pool opens it, before anyone accepts.
            let mut clients = Vec::new();
            for _ in 0..64 {
                clients.push(tokio::net::TcpStream::connect(local).await.unwrap());
            }
            let mut counts = Vec::new();
            for l in &listeners {
                let mut n = 0;
                while let Ok(Ok(_)) =
                    tokio::time::timeout(std::time::Duration::from_millis(200), l.accept()).await
                {
                    n += 1;
                }
                counts.push(n);
            }
            counts
        });
        assert_eq!(per_socket.iter().sum::<usize>(), 64, "{per_socket:?}");
        if cfg!(target_os = "linux") {
            // By the connections' addresses: all 64 on one of two sockets is a 2^-63 chance.
            assert!(per_socket.iter().all(|&n| n > 0), "{per_socket:?}");
        }
    }

    #[test]
    fn without_sockets_of_their_own_the_threads_share_one() {
        fn refused(_: SocketAddr, _: usize) -> io::Result<Vec<Bound>> {
            Err(io::Error::from(io::ErrorKind::InvalidInput))
        }
        let (local, bound) = bind_with("127.0.0.1:0", 2, Some(refused)).unwrap();
        assert!(bound.iter().all(|b| matches!(b, Bound::Shared(_))), "{bound:?}");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listeners: Vec<_> = bound.into_iter().map(|b| b.listen().unwrap()).collect();
            let _client = tokio::net::TcpStream::connect(local).await.unwrap();
            // One socket: either handle accepts it.
            let (accepted, _) = listeners[1].accept().await.unwrap();
            assert_eq!(accepted.local_addr().unwrap(), local);
        });
    }
}
