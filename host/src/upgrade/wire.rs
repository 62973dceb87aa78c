//! The handover's messages over a Unix stream socket: JSON messages, each after its length
//! (4 bytes, big-endian), and descriptors, attached (SCM_RIGHTS) to one-byte messages of their
//! own, at most [`FDS_PER_MESSAGE`] each. Descriptors travel only after a JSON message that
//! says how many follow, so the reader knows when to expect them; plain reads never consume
//! the byte they ride on.

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, recvmsg, sendmsg,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Below Linux's SCM_MAX_FD (253) descriptors per message.
pub const FDS_PER_MESSAGE: usize = 200;
/// A longer message is not one of ours.
const MAX_MESSAGE: usize = 1 << 20;

/// The version of this protocol; a new binary refuses an offer of another.
pub const VERSION: u32 = 1;

/// What the running process offers the new one: its listening sockets, by name, with how many
/// descriptors each has (one per worker); the descriptors follow in this order.
#[derive(Debug, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Offer {
    pub version: u32,
    /// The running process's id.
    pub pid: u32,
    pub sockets: Vec<OfferedSocket>,
}

#[derive(Debug, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OfferedSocket {
    pub name: String,
    pub count: usize,
}

/// The new process's answer: serving (it accepts on the sockets; the running process may stop),
/// or why it cannot start (then it exits, and the running process goes on as if nothing happened).
#[derive(Debug, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", tag = "outcome")]
pub enum Answer {
    Ready { pid: u32 },
    Failed { pid: u32, error: String },
}

pub fn send_json<T: Serialize>(stream: &mut UnixStream, message: &T) -> io::Result<()> {
    let body = serde_json::to_vec(message).map_err(io::Error::other)?;
    let len = u32::try_from(body.len()).map_err(io::Error::other)?;
    stream.write_all(&len.to_be_bytes())?;
    stream.write_all(&body)?;
    stream.flush()
}

pub fn recv_json<T: DeserializeOwned>(stream: &mut UnixStream) -> io::Result<T> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a handover message of {len} bytes"),
        ));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body)?;
    serde_json::from_slice(&body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

pub fn send_fds(stream: &UnixStream, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    for chunk in fds.chunks(FDS_PER_MESSAGE) {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FDS_PER_MESSAGE))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !control.push(SendAncillaryMessage::ScmRights(chunk)) {
            return Err(io::Error::other(
                "descriptors do not fit the control buffer",
            ));
        }
        let sent = sendmsg(
            stream.as_fd(),
            &[IoSlice::new(b"F")],
            &mut control,
            SendFlags::empty(),
        )?;
        if sent != 1 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "descriptors not sent",
            ));
        }
    }
    Ok(())
}

/// Receives `count` descriptors, close-on-exec.
pub fn recv_fds(stream: &UnixStream, count: usize) -> io::Result<Vec<OwnedFd>> {
    let mut fds = Vec::with_capacity(count);
    while fds.len() < count {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FDS_PER_MESSAGE))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut byte = [0u8; 1];
        let received = recvmsg(
            stream.as_fd(),
            &mut [IoSliceMut::new(&mut byte)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )?;
        if received.bytes == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} of {count} descriptors received", fds.len()),
            ));
        }
        let before = fds.len();
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = message {
                fds.extend(received);
            }
        }
        if fds.len() == before {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a handover message without descriptors",
            ));
        }
    }
    Ok(fds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn messages_and_descriptors_cross_in_order() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let listeners: Vec<TcpListener> = (0..FDS_PER_MESSAGE + 5)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let offer = Offer {
            version: VERSION,
            pid: 7,
            sockets: vec![OfferedSocket {
                name: "127.0.0.1:0".into(),
                count: listeners.len(),
            }],
        };
        let sender = std::thread::spawn(move || {
            send_json(&mut a, &offer).unwrap();
            let fds: Vec<_> = listeners.iter().map(|l| l.as_fd()).collect();
            send_fds(&a, &fds).unwrap();
            send_json(&mut a, &Answer::Ready { pid: 8 }).unwrap();
            listeners
                .iter()
                .map(|l| l.local_addr().unwrap())
                .collect::<Vec<_>>()
        });
        let offer: Offer = recv_json(&mut b).unwrap();
        assert_eq!(offer.pid, 7);
        let fds = recv_fds(&b, offer.sockets[0].count).unwrap();
        let answer: Answer = recv_json(&mut b).unwrap();
        assert!(matches!(answer, Answer::Ready { pid: 8 }));
        let sent = sender.join().unwrap();
        let received: Vec<_> = fds
            .into_iter()
            .map(|fd| TcpListener::from(fd).local_addr().unwrap())
            .collect();
        // The same sockets, in the same order.
        assert_eq!(received, sent);
    }
}
