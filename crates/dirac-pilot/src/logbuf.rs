//! An in-memory copy of the pilot's log, sent to the server at the end.

use std::io;
use std::sync::{Arc, Mutex};

use tracing_subscriber::fmt::MakeWriter;

/// Largest log kept; older lines are dropped first.
pub const LOG_CAP: usize = 1024 * 1024;

/// A bounded, shareable log buffer usable as a tracing writer.
#[derive(Clone, Debug)]
pub struct LogBuffer {
    inner: Arc<Mutex<Vec<u8>>>,
    cap: usize,
}

impl Default for LogBuffer {
    fn default() -> Self {
        Self::with_cap(LOG_CAP)
    }
}

impl LogBuffer {
    pub fn with_cap(cap: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Vec::new())),
            cap,
        }
    }

    fn append(&self, bytes: &[u8]) {
        let mut buf = match self.inner.lock() {
            Ok(buf) => buf,
            Err(poisoned) => poisoned.into_inner(),
        };
        buf.extend_from_slice(bytes);
        if buf.len() > self.cap {
            // Drop whole lines from the front, down to three quarters of the cap.
            let excess = buf.len() - self.cap * 3 / 4;
            let cut = buf[excess..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(buf.len(), |p| excess + p + 1);
            buf.drain(..cut);
        }
    }

    /// The log kept so far, as text.
    pub fn text(&self) -> String {
        let buf = match self.inner.lock() {
            Ok(buf) => buf,
            Err(poisoned) => poisoned.into_inner(),
        };
        String::from_utf8_lossy(&buf).into_owned()
    }
}

/// One write handle of a [`LogBuffer`].
pub struct LogWriter(LogBuffer);

impl io::Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.append(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogBuffer {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LogWriter(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn keeps_the_latest_whole_lines_under_the_cap() {
        let log = LogBuffer::with_cap(100);
        let mut w = log.make_writer();
        for i in 0..50 {
            writeln!(w, "line {i:02}").expect("write");
        }
        let text = log.text();
        assert!(text.len() <= 100, "{}", text.len());
        assert!(text.starts_with("line "), "{text}");
        assert!(text.ends_with("line 49\n"));
    }
}
