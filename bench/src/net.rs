//! Client-side socket setup shared by every scenario.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpSocket, TcpStream};

/// Source addresses that client sockets are bound to before connecting.
///
/// Linux routes all of 127.0.0.0/8 to the loopback interface, so each extra
/// source address brings its own ~28k ephemeral ports. The new-connection
/// scenario opens tens of thousands of connections per run and sockets linger
/// in TIME_WAIT for 60 s; with a single source address it would run out of
/// ports within a couple of runs.
#[derive(Clone, Debug)]
pub struct SourceAddrs {
    addrs: Arc<[Ipv4Addr]>,
}

impl SourceAddrs {
    /// Uses 127.0.0.2 ..= 127.0.0.(1 + count), or only 127.0.0.1 when `count`
    /// is 0 or the system refuses to bind 127.0.0.2 (not every OS routes the
    /// whole /8 to loopback).
    pub fn detect(count: u8) -> Self {
        let first = Ipv4Addr::new(127, 0, 0, 2);
        if count == 0 {
            return Self::single();
        }
        if let Err(e) = probe_bind(first) {
            eprintln!(
                "note: cannot bind {first} ({e}); all client connections will come from 127.0.0.1"
            );
            return Self::single();
        }
        let addrs: Vec<Ipv4Addr> = (0..count)
            .map(|i| Ipv4Addr::new(127, 0, 0, 2u8.saturating_add(i)))
            .collect();
        Self {
            addrs: addrs.into(),
        }
    }

    /// 127.0.0.(first) ..= 127.0.0.(first + count - 1).
    pub fn range(first: u8, count: u8) -> Self {
        let addrs: Vec<Ipv4Addr> = (0..count.max(1))
            .map(|i| Ipv4Addr::new(127, 0, 0, first.saturating_add(i)))
            .collect();
        Self {
            addrs: addrs.into(),
        }
    }

    fn single() -> Self {
        Self {
            addrs: Arc::from([Ipv4Addr::LOCALHOST]),
        }
    }

    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    /// Round-robin pick; callers pass a per-connection counter.
    pub fn get(&self, index: usize) -> Ipv4Addr {
        self.addrs[index % self.addrs.len()]
    }
}

fn probe_bind(addr: Ipv4Addr) -> io::Result<()> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.bind(&SocketAddr::V4(SocketAddrV4::new(addr, 0)).into())
}

/// Connects to `dst` from `src` with Nagle disabled.
///
/// SO_REUSEADDR lets the kernel hand out a local port that is only held by a
/// TIME_WAIT socket when the range is otherwise exhausted; on loopback the
/// kernel then resolves the 4-tuple clash itself (tcp_tw_reuse=2 is the Linux
/// default for loopback).
pub async fn connect(src: Ipv4Addr, dst: SocketAddr) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.bind(&SocketAddr::V4(SocketAddrV4::new(src, 0)).into())?;
    socket.set_nonblocking(true)?;
    let socket = TcpSocket::from_std_stream(std::net::TcpStream::from(socket));
    socket.connect(dst).await
}

/// Picks a port that is free right now on 127.0.0.1 by binding port 0 and
/// releasing it. Another process could take it before the gateway binds it;
/// on a bench machine that race is acceptable and the start-up check reports it.
pub fn free_port() -> io::Result<u16> {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}
