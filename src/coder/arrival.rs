//! A TCP stream that knows when its latest bytes arrived, by the kernel's clock.
//!
//! A phase that ends on an event ends when the event reached this machine. Reading the clock
//! when our code gets to the bytes adds whatever kept it from running: with a thousand
//! agents becoming ready within a millisecond, the last of the burst was read 3 to 4 ms
//! after it arrived, however fast the reader. The kernel stamps each segment as it comes in
//! (`SO_TIMESTAMPNS`); reading with `recvmsg` hands that stamp back with the bytes, so the
//! moment is exact whatever the scheduling. Where the kernel gives no stamp (another OS, an
//! option refused), the moment of the read stands in.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A [`TcpStream`] whose reads note when the bytes they returned arrived.
#[derive(Debug)]
pub struct ArrivalStamped {
    tcp: TcpStream,
    arrived: Option<Instant>,
}

impl ArrivalStamped {
    /// Asks the kernel to stamp what arrives on `tcp`.
    pub fn new(tcp: TcpStream) -> ArrivalStamped {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let on: libc::c_int = 1;
            // SAFETY: a valid socket and an int option of the right size; refusal is harmless
            // (reads then carry no stamp).
            unsafe {
                libc::setsockopt(
                    tcp.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_TIMESTAMPNS,
                    &on as *const libc::c_int as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
        ArrivalStamped { tcp, arrived: None }
    }

    /// When the bytes of the latest read arrived; `None` before any stamped read.
    pub fn arrived(&self) -> Option<Instant> {
        self.arrived
    }
}

/// The kernel's wall-clock stamp as an `Instant`: now, less how long ago it was.
#[cfg(target_os = "linux")]
fn to_instant(stamp: SystemTime) -> Instant {
    let (now, wall) = (Instant::now(), SystemTime::now());
    let ago = wall.duration_since(stamp).unwrap_or(Duration::ZERO);
    now.checked_sub(ago).unwrap_or(now)
}

/// One `recvmsg` into `buf`: how many bytes, and the kernel's stamp of them if it gave one.
#[cfg(target_os = "linux")]
fn recv_stamped(
    fd: std::os::fd::RawFd,
    buf: &mut [std::mem::MaybeUninit<u8>],
) -> io::Result<(usize, Option<SystemTime>)> {
    // Room for one control message holding a timespec.
    let mut control = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: the buffers are valid for their stated lengths; recvmsg writes at most that.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut stamp = None;
    // SAFETY: walking the control messages the kernel wrote, with libc's own macros.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                stamp = Some(
                    SystemTime::UNIX_EPOCH + Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32),
                );
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n as usize, stamp))
}

impl AsyncRead for ArrivalStamped {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let this = self.get_mut();
            loop {
                std::task::ready!(this.tcp.poll_read_ready(cx))?;
                let fd = this.tcp.as_raw_fd();
                // SAFETY: recvmsg initializes the `n` bytes it reports, which alone are
                // marked filled.
                let unfilled = unsafe { buf.unfilled_mut() };
                match this
                    .tcp
                    .try_io(tokio::io::Interest::READABLE, || recv_stamped(fd, unfilled))
                {
                    Ok((n, stamp)) => {
                        unsafe { buf.assume_init(n) };
                        buf.advance(n);
                        if n > 0 {
                            this.arrived = Some(stamp.map_or_else(Instant::now, to_instant));
                        }
                        return Poll::Ready(Ok(()));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let this = self.get_mut();
            let before = buf.filled().len();
            let r = Pin::new(&mut this.tcp).poll_read(cx, buf);
            if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
                this.arrived = Some(Instant::now());
            }
            r
        }
    }
}

impl AsyncWrite for ArrivalStamped {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Bytes read 250 ms after they arrived carry the moment they arrived, not the read's.
    #[tokio::test]
    async fn a_late_read_keeps_the_moment_the_bytes_arrived() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            // After the client has asked for stamps (a segment in before that has none, as
            // in use, where the option is set before the upgrade request goes out).
            tokio::time::sleep(Duration::from_millis(50)).await;
            s.write_all(b"ready").await.unwrap();
            let sent = Instant::now();
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest).await;
            sent
        });
        let mut c = ArrivalStamped::new(TcpStream::connect(addr).await.unwrap());
        assert_eq!(c.arrived(), None);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut buf = [0u8; 16];
        let n = c.read(&mut buf).await.unwrap();
        let read_at = Instant::now();
        assert_eq!(&buf[..n], b"ready");
        let arrived = c.arrived().expect("a stamp");
        drop(c);
        let sent = server.await.unwrap();
        let waited = read_at - arrived;
        assert!(
            waited >= Duration::from_millis(200),
            "stamped {waited:?} before the read: the read's own moment, not the arrival"
        );
        // The bytes arrived after the server wrote them (loopback: well within a few ms).
        let lag = arrived.saturating_duration_since(sent);
        assert!(
            arrived + Duration::from_millis(1) >= sent && lag < Duration::from_millis(50),
            "arrived {lag:?} after sending"
        );
    }
}
