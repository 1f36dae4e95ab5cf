//! The probe over stdio: newline-delimited JSON-RPC on streams that are
//! already connected (a child's pipes, or a container's attached streams).
//!
//! Servers often print banners and logs on stdout before they speak; any line
//! that is not a JSON-RPC message is skipped rather than taken as a failure.

use super::mcp::{self, Channel, ProbeError, Reply};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

/// Longest stdout line kept; a longer one is log noise or garbage, and
/// buffering it whole would let a misbehaving server eat memory.
const LINE_LIMIT: usize = 1 << 20;

pub(crate) struct Stdio<R, W> {
    reader: BufReader<R>,
    writer: W,
    /// The line being read. It lives here, not in `call`, so a wait cut short
    /// by the discover timeout keeps what it had read for the next call.
    line: Vec<u8>,
    /// Set while skipping the rest of an over-long line.
    overflowed: bool,
    pub(crate) noise_lines: usize,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Stdio<R, W> {
    pub(crate) fn new(reader: R, writer: W) -> Self {
        Stdio {
            reader: BufReader::new(reader),
            writer,
            line: Vec::new(),
            overflowed: false,
            noise_lines: 0,
        }
    }

    async fn send(&mut self, message: &Value) -> Result<(), ProbeError> {
        let mut bytes = message.to_string().into_bytes();
        bytes.push(b'\n');
        self.writer.write_all(&bytes).await.map_err(write_error)?;
        self.writer.flush().await.map_err(write_error)
    }

    /// The next complete stdout line, or `None` at end of stream.
    ///
    /// Cancel-safe: bytes consumed from the reader are already in `self.line`.
    async fn next_line(&mut self) -> Result<Option<Vec<u8>>, ProbeError> {
        loop {
            let available = self
                .reader
                .fill_buf()
                .await
                .map_err(|e| ProbeError::Io(format!("cannot read stdout: {e}")))?;
            if available.is_empty() {
                return Ok(None);
            }
            let (taken, complete) = match available.iter().position(|&b| b == b'\n') {
                Some(end) => (end + 1, true),
                None => (available.len(), false),
            };
            if !self.overflowed {
                self.line.extend_from_slice(&available[..taken]);
                if self.line.len() > LINE_LIMIT {
                    self.overflowed = true;
                    self.line.clear();
                }
            }
            self.reader.consume(taken);
            if complete {
                let overflowed = std::mem::replace(&mut self.overflowed, false);
                let line = std::mem::take(&mut self.line);
                if overflowed {
                    self.noise_lines += 1;
                    continue;
                }
                return Ok(Some(line));
            }
        }
    }
}

fn write_error(error: std::io::Error) -> ProbeError {
    match error.kind() {
        std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => ProbeError::Closed,
        _ => ProbeError::Io(format!("cannot write to stdin: {error}")),
    }
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Channel for Stdio<R, W> {
    async fn call(
        &mut self,
        request: Value,
        id: u64,
        _modern_version: Option<&str>,
    ) -> Result<Reply, ProbeError> {
        self.send(&request).await?;
        loop {
            let Some(line) = self.next_line().await? else {
                return Err(ProbeError::Closed);
            };
            match serde_json::from_slice::<Value>(&line) {
                Ok(message) if mcp::is_jsonrpc(&message) => {
                    if let Some(answer) = mcp::response_in(message, id) {
                        return Ok(Reply::Answer(answer));
                    }
                    // Notifications, server requests and late answers to an
                    // earlier request are not ours.
                }
                _ => self.noise_lines += 1,
            }
        }
    }

    async fn notify(&mut self, notification: Value, _version: &str) -> Result<(), ProbeError> {
        self.send(&notification).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn skips_noise_and_other_ids_and_survives_a_cut_short_wait() {
        let (client, server) = tokio::io::duplex(4096);
        let (client_read, client_write) = tokio::io::split(client);
        let (mut server_read, mut server_write) = tokio::io::split(server);
        let mut stdio = Stdio::new(client_read, client_write);

        // Half a line, then the wait is abandoned (as on a discover timeout).
        server_write.write_all(b"booting...").await.unwrap();
        let cut = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            stdio.call(
                serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "x"}),
                1,
                None,
            ),
        )
        .await;
        assert!(cut.is_err(), "the call should still be waiting");
        let mut request = vec![0; 256];
        let n = server_read.read(&mut request).await.unwrap();
        assert!(request[..n].ends_with(b"\n"));

        server_write
            .write_all(
                b" done\n{\"not\": \"rpc\"}\n{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n{\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"ok\":true}}\n",
            )
            .await
            .unwrap();
        let reply = stdio
            .call(
                serde_json::json!({"jsonrpc": "2.0", "id": 2, "method": "y"}),
                2,
                None,
            )
            .await;
        let Ok(Reply::Answer(answer)) = reply else {
            panic!("no answer: {reply:?}");
        };
        assert_eq!(answer["result"]["ok"], true);
        assert_eq!(stdio.noise_lines, 2, "the banner line and the non-RPC JSON");
    }

    #[tokio::test]
    async fn end_of_stream_is_a_closed_connection() {
        let (client, server) = tokio::io::duplex(4096);
        let (client_read, client_write) = tokio::io::split(client);
        drop(server);
        let mut stdio = Stdio::new(client_read, client_write);
        let reply = stdio
            .call(
                serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "x"}),
                1,
                None,
            )
            .await;
        assert!(matches!(reply, Err(ProbeError::Closed)), "{reply:?}");
    }
}
