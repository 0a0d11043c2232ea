//! A bounded copy of an output stream: the first and the last part are kept (terraform's errors
//! come last), with the total size and a `truncated` flag, so a flood cannot exhaust memory.

use serde::Serialize;

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Captured {
    pub text: String,
    pub total_bytes: u64,
    pub truncated: bool,
}

pub struct Capture {
    limit: usize,
    head: Vec<u8>,
    tail: std::collections::VecDeque<u8>,
    total: u64,
}

impl Capture {
    pub fn new(limit: usize) -> Capture {
        Capture {
            limit,
            head: Vec::new(),
            tail: std::collections::VecDeque::new(),
            total: 0,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.total += bytes.len() as u64;
        let head_cap = self.limit - self.limit / 4;
        let take = bytes.len().min(head_cap.saturating_sub(self.head.len()));
        self.head.extend_from_slice(&bytes[..take]);
        let rest = &bytes[take..];
        if rest.is_empty() {
            return;
        }
        let tail_cap = self.limit / 4;
        self.tail.extend(rest);
        let excess = self.tail.len().saturating_sub(tail_cap);
        self.tail.drain(..excess);
    }

    pub fn finish(self) -> Captured {
        let truncated = self.total > (self.head.len() + self.tail.len()) as u64;
        let mut text = String::from_utf8_lossy(&self.head).into_owned();
        if truncated {
            let dropped = self.total - (self.head.len() + self.tail.len()) as u64;
            text.push_str(&format!("\n[… {dropped} bytes omitted …]\n"));
        }
        let (a, b) = self.tail.as_slices();
        let mut tail = a.to_vec();
        tail.extend_from_slice(b);
        text.push_str(&String::from_utf8_lossy(&tail));
        Captured {
            text,
            total_bytes: self.total,
            truncated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_output_is_kept_whole() {
        let mut c = Capture::new(1024);
        c.push(b"hello ");
        c.push(b"world");
        let out = c.finish();
        assert_eq!(out.text, "hello world");
        assert!(!out.truncated);
    }

    #[test]
    fn flood_keeps_head_and_tail() {
        let mut c = Capture::new(1024);
        c.push(b"START");
        for _ in 0..10_000 {
            c.push(&[b'x'; 100]);
        }
        c.push(b"END");
        let out = c.finish();
        assert!(out.truncated);
        assert_eq!(out.total_bytes, 5 + 1_000_000 + 3);
        assert!(out.text.starts_with("START"));
        assert!(out.text.ends_with("END"));
        assert!(out.text.len() < 1200);
    }
}
