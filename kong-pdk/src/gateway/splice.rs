//! Bytes from one TCP socket to another without copying them through user memory: splice(2)
//! moves them into a pipe, and from the pipe into the other socket (Linux).
//!
//! The stream relay switches a direction to a [`Pipe`] once it moves bulk data; quiet sessions
//! never open one, so they keep their two file descriptors and no pipe buffers.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice};
use nix::sys::socket::{MsgFlags, recv};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// The capacity asked for a pipe: the most one splice moves. Four times the buffered relay's
/// bulk reads, for fewer system calls per MiB.
const PIPE_BYTES: usize = 256 * 1024;

/// The least capacity worth a pipe: the buffered relay's bulk reads. Past the user's pipe quota
/// (`/proc/sys/fs/pipe-user-pages-soft`) Linux gives new pipes two pages; then the caller keeps
/// its buffer.
const PIPE_MIN: usize = 64 * 1024;

/// A pipe between two sockets, and how many bytes it holds. It holds at most its capacity and
/// is emptied before it is filled again, so a slow reader holds back the sender.
pub(super) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
    held: usize,
}

impl Pipe {
    /// A new, empty pipe (both ends non-blocking, closed on exec) of [`PIPE_BYTES`] where the
    /// system allows it; an error when it cannot hold even [`PIPE_MIN`].
    pub(super) fn new() -> io::Result<Pipe> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        let capacity = match fcntl(&write, FcntlArg::F_SETPIPE_SZ(PIPE_BYTES as i32)) {
            Ok(size) => size,
            Err(_) => fcntl(&write, FcntlArg::F_GETPIPE_SZ)?,
        };
        let capacity = usize::try_from(capacity).unwrap_or(0).min(PIPE_BYTES);
        if capacity < PIPE_MIN {
            return Err(io::Error::other("the pipe is smaller than a bulk read"));
        }
        Ok(Pipe {
            read,
            write,
            capacity,
            held: 0,
        })
    }

    /// Waits for `from` to be readable and moves what it has (up to the pipe's capacity) into
    /// the pipe: the bytes moved, 0 at the end of `from`'s input.
    pub(super) async fn fill(&mut self, from: &TcpStream) -> io::Result<usize> {
        debug_assert_eq!(self.held, 0, "a pipe is emptied before it is filled");
        loop {
            from.readable().await?;
            let moved = from.try_io(Interest::READABLE, || {
                let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
                match splice(from, None, &self.write, None, self.capacity, flags) {
                    Err(Errno::EAGAIN) => self.past_urgent_mark(from),
                    moved => Ok(moved?),
                }
            });
            match moved {
                Ok(n) => {
                    self.held = n;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// splice(2) stops at TCP urgent data (MSG_OOB) and says EAGAIN while bytes wait behind it;
    /// recv(2) steps over the urgent byte, as the buffered relay does. After an EAGAIN, one
    /// small recv tells the two apart: what it reads goes into the (empty) pipe, and splicing
    /// goes on past the mark. A real EAGAIN stays one.
    fn past_urgent_mark(&self, from: &TcpStream) -> io::Result<usize> {
        let mut bytes = [0u8; 4096];
        let n = recv(from.as_raw_fd(), &mut bytes, MsgFlags::empty())?;
        if n > 0 && nix::unistd::write(&self.write, &bytes[..n])? != n {
            return Err(io::Error::other("an empty pipe took less than 4 KiB"));
        }
        Ok(n)
    }

    /// Moves everything the pipe holds into `to`, waiting at most `wait` each time `to`'s send
    /// buffer is full (nginx's timeout between two successive writes), and calling `progress`
    /// after each write that moved bytes.
    pub(super) async fn drain(&mut self, to: &TcpStream, wait: Duration, mut progress: impl FnMut()) -> io::Result<()> {
        while self.held > 0 {
            tokio::time::timeout(wait, to.writable())
                .await
                .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
            let moved = to.try_io(Interest::WRITABLE, || {
                let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
                Ok(splice(&self.read, None, to, None, self.held, flags)?)
            });
            match moved {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.held -= n;
                    progress();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Two connected sockets: (the one the test holds, the one the pipe uses).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let near = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (far, _) = listener.accept().await.unwrap();
        (near, far)
    }

    #[tokio::test]
    async fn bytes_cross_the_pipe_in_order_and_the_end_shows_as_zero() {
        let (mut sender, from) = pair().await;
        let (mut receiver, to) = pair().await;
        let data: Vec<u8> = (0..3 * 1024 * 1024 + 17).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            sender.write_all(&sent).await.unwrap();
            sender.shutdown().await.unwrap();
        });
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            receiver.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut pipe = Pipe::new().unwrap();
        let mut moved = 0;
        loop {
            let n = pipe.fill(&from).await.unwrap();
            assert!(n <= pipe.capacity && pipe.capacity >= PIPE_MIN);
            if n == 0 {
                break;
            }
            pipe.drain(&to, std::time::Duration::from_secs(10), || {})
                .await
                .unwrap();
            moved += n;
        }
        assert_eq!(moved, data.len());
        socket2::SockRef::from(&to).shutdown(std::net::Shutdown::Write).unwrap();
        writer.await.unwrap();
        assert!(reader.await.unwrap() == data, "the bytes arrive whole and in order");
    }
}
