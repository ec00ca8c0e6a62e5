//! Length-prefixed frames read from a socket through one buffer: a read takes whatever the
//! socket holds, up to the buffer's size, so frames that arrive together cost one system
//! call, not two each (prefix, then body). Used for client connections (`i32` prefix) and for
//! server-to-server connections (`u32` prefix; every allowed length is below 2^31, so both
//! read the same).

/// Reads frames from a socket into a buffer of `chunk_bytes`, grown (by doubling, as the bytes
/// arrive) to hold one larger frame while it is read, and shrunk back after.
pub struct FrameReader {
    buffer: Vec<u8>,
    start: usize,
    end: usize,
    frame_bytes_max: usize,
    chunk_bytes: usize,
}

pub enum Frame {
    /// The frame's body is `frame((start, end))`.
    Complete(usize, usize),
    NeedMore,
    /// A length prefix outside 0..=frame_bytes_max.
    BadLength,
}

impl FrameReader {
    pub fn new(frame_bytes_max: usize, chunk_bytes: usize) -> FrameReader {
        FrameReader {
            buffer: vec![0; chunk_bytes],
            start: 0,
            end: 0,
            frame_bytes_max,
            chunk_bytes,
        }
    }

    /// Bytes read and not yet taken as frames.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    pub fn next_frame(&mut self) -> Frame {
        let available = self.buffered();
        if available < 4 {
            return Frame::NeedMore;
        }
        let b = &self.buffer[self.start..self.start + 4];
        let length = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        if length < 0 || length as usize > self.frame_bytes_max {
            return Frame::BadLength;
        }
        let length = length as usize;
        if available < 4 + length {
            return Frame::NeedMore;
        }
        let range = (self.start + 4, self.start + 4 + length);
        self.start += 4 + length;
        Frame::Complete(range.0, range.1)
    }

    /// Makes room for at least the frame being read, then reads once. Ok(false) at EOF.
    pub async fn fill<R: futures_lite::AsyncRead + Unpin>(
        &mut self,
        socket: &mut R,
    ) -> std::io::Result<bool> {
        use futures_lite::io::AsyncReadExt;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        let available = self.buffered();
        let needed = if available >= 4 {
            let b = &self.buffer[self.start..self.start + 4];
            4 + i32::from_be_bytes([b[0], b[1], b[2], b[3]]).max(0) as usize
        } else {
            4
        };
        if self.start > 0 && self.start + needed.max(self.chunk_bytes / 2) > self.buffer.len() {
            self.buffer.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if needed > self.buffer.len() && self.end == self.buffer.len() {
            // Grow by doubling once full, not to the announced length at once: a peer that
            // announces a frame of the largest allowed size and sends little of it gets a
            // buffer at most twice what it sent, not the whole allowance.
            let grown = self
                .buffer
                .len()
                .saturating_mul(2)
                .max(self.chunk_bytes)
                .min(needed);
            self.buffer.resize(grown, 0);
        } else if self.buffer.len() > self.chunk_bytes
            && needed <= self.chunk_bytes
            && self.end <= self.chunk_bytes
        {
            // Give back the memory of a large frame once it has been consumed.
            self.buffer.truncate(self.chunk_bytes);
            self.buffer.shrink_to_fit();
        }
        let n = socket.read(&mut self.buffer[self.end..]).await?;
        self.end += n;
        Ok(n > 0)
    }

    pub fn frame(&self, range: (usize, usize)) -> &[u8] {
        &self.buffer[range.0..range.1]
    }

    /// The first four bytes, for four-letter-word detection.
    pub fn peek_prefix(&self) -> Option<[u8; 4]> {
        (self.buffered() >= 4).then(|| {
            let b = &self.buffer[self.start..self.start + 4];
            [b[0], b[1], b[2], b[3]]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that hands out its bytes `step` at a time.
    struct Trickle {
        bytes: Vec<u8>,
        at: usize,
        step: usize,
    }

    impl futures_lite::AsyncRead for Trickle {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut [u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let n = buf.len().min(self.step).min(self.bytes.len() - self.at);
            let at = self.at;
            buf[..n].copy_from_slice(&self.bytes[at..at + n]);
            self.at += n;
            std::task::Poll::Ready(Ok(n))
        }
    }

    fn framed(bodies: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for b in bodies {
            out.extend_from_slice(&(b.len() as u32).to_be_bytes());
            out.extend_from_slice(b);
        }
        out
    }

    /// Every frame comes out whole and in order, whatever the read sizes, including frames
    /// larger than the buffer; returns how many reads it took.
    fn read_all(bodies: &[Vec<u8>], step: usize, chunk: usize) -> usize {
        let mut socket = Trickle {
            bytes: framed(bodies),
            at: 0,
            step,
        };
        let mut frames = FrameReader::new(1 << 20, chunk);
        let mut got = Vec::new();
        let mut reads = 0;
        futures_lite::future::block_on(async {
            loop {
                match frames.next_frame() {
                    Frame::Complete(a, b) => got.push(frames.frame((a, b)).to_vec()),
                    Frame::NeedMore => {
                        reads += 1;
                        if !frames.fill(&mut socket).await.unwrap() {
                            break;
                        }
                    }
                    Frame::BadLength => panic!("a bad length"),
                }
            }
        });
        assert_eq!(got, bodies);
        assert_eq!(frames.buffered(), 0);
        reads
    }

    #[test]
    fn frames_come_out_whole_in_order_whatever_the_read_sizes() {
        let bodies: Vec<Vec<u8>> = (0..200u32)
            .map(|i| (0..(i * 37) % 3000).map(|j| (i + j) as u8).collect())
            .collect();
        for step in [1, 3, 64, 1000, 1 << 20] {
            read_all(&bodies, step, 1024);
        }
    }

    #[test]
    fn frames_that_arrive_together_take_one_read() {
        let bodies: Vec<Vec<u8>> = (0..100).map(|i| vec![i as u8; 50]).collect();
        // 5,400 bytes in one 64 KiB read, then the read that sees the end.
        assert_eq!(read_all(&bodies, 1 << 20, 64 * 1024), 2);
    }

    #[test]
    fn an_announced_large_frame_costs_memory_only_as_its_bytes_arrive() {
        // A prefix announcing 1 MiB, then 10,000 bytes of it, then the end of the stream.
        let mut bytes = (1u32 << 20).to_be_bytes().to_vec();
        bytes.extend(std::iter::repeat_n(7u8, 10_000));
        let mut socket = Trickle {
            bytes,
            at: 0,
            step: 1 << 20,
        };
        let mut frames = FrameReader::new(1 << 20, 1024);
        futures_lite::future::block_on(async {
            loop {
                assert!(matches!(frames.next_frame(), Frame::NeedMore));
                if !frames.fill(&mut socket).await.unwrap() {
                    break;
                }
            }
        });
        assert_eq!(frames.buffered(), 10_004);
        assert!(
            frames.buffer.len() <= 2 * 10_004 + 1024,
            "a buffer of {} bytes for 10,004 received",
            frames.buffer.len()
        );
    }

    #[test]
    fn a_length_above_the_limit_or_negative_is_refused() {
        for prefix in [(1u32 << 20) + 1, 0x8000_0000] {
            let mut frames = FrameReader::new(1 << 20, 1024);
            let mut socket = Trickle {
                bytes: prefix.to_be_bytes().to_vec(),
                at: 0,
                step: 4,
            };
            futures_lite::future::block_on(frames.fill(&mut socket)).unwrap();
            assert!(matches!(frames.next_frame(), Frame::BadLength));
        }
    }
}
