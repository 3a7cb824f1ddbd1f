//! Small text encodings plugins need on the request path, written without a format call per
//! byte or digit.
//!
//! ```
//! use kong_pdk::text;
//!
//! assert_eq!(text::hex(&[0x00, 0xab, 0x7f]), "00ab7f");
//! assert_eq!(text::decimal(1234567890).to_str().unwrap(), "1234567890");
//! ```

use http::HeaderValue;

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// `bytes` as lowercase hexadecimal, two characters per byte (Kong's `to_hex`).
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// How many small numbers [`decimal`] hands out without allocating: latencies in
/// milliseconds and small body lengths.
const SMALL: usize = 1024;

/// `n` in decimal as a header value. Values below 1,024 (most latencies in milliseconds)
/// are shared and cost no allocation; others take one.
pub fn decimal(n: u64) -> HeaderValue {
    static SMALL_VALUES: std::sync::LazyLock<Vec<HeaderValue>> = std::sync::LazyLock::new(|| {
        (0..SMALL as u64)
            .map(|n| HeaderValue::from_static(Box::leak(n.to_string().into_boxed_str())))
            .collect()
    });
    if let Some(v) = usize::try_from(n).ok().and_then(|i| SMALL_VALUES.get(i)) {
        return v.clone();
    }
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    let mut rest = n;
    loop {
        at -= 1;
        buf[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    HeaderValue::from_bytes(&buf[at..]).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// A header value's bytes kept inline, so that a value costs one allocation and its clones
/// none (a value from `Bytes::copy_from_slice` allocates again when first cloned, and the
/// gateway clones upstream heads to keep them for `kong.service.request` and the log).
struct Inline {
    len: u8,
    bytes: [u8; INLINE],
}

/// The longest value kept inline: covers addresses, host names, ids and latencies.
const INLINE: usize = 62;

impl AsRef<[u8]> for Inline {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl std::fmt::Write for Inline {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let at = usize::from(self.len);
        let end = at + s.len();
        self.bytes
            .get_mut(at..end)
            .ok_or(std::fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = end as u8;
        Ok(())
    }
}

/// What `HeaderValue::from_str` accepts: visible ASCII, spaces and tabs.
fn is_text(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == b'\t' || (32..127).contains(&b))
}

/// `text` as a header value whose clones share it; `None` when it is not valid header text
/// (the rules of `HeaderValue::from_str`).
pub(crate) fn shared_value(text: &[u8]) -> Option<HeaderValue> {
    if !is_text(text) {
        return None;
    }
    let bytes = match u8::try_from(text.len()) {
        Ok(len) if text.len() <= INLINE => {
            let mut bytes = [0; INLINE];
            bytes[..text.len()].copy_from_slice(text);
            bytes::Bytes::from_owner(Inline { len, bytes })
        }
        _ => bytes::Bytes::copy_from_slice(text),
    };
    HeaderValue::from_maybe_shared(bytes).ok()
}

/// A header value written from `args` (as `format!` would), shared by its clones; `None`
/// when the text is not valid header text.
pub(crate) fn shared_fmt(args: std::fmt::Arguments<'_>) -> Option<HeaderValue> {
    let mut inline = Inline {
        len: 0,
        bytes: [0; INLINE],
    };
    let bytes = if std::fmt::Write::write_fmt(&mut inline, args).is_ok() {
        bytes::Bytes::from_owner(inline)
    } else {
        bytes::Bytes::from(std::fmt::format(args))
    };
    if !is_text(&bytes) {
        return None;
    }
    HeaderValue::from_maybe_shared(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_writes_two_lowercase_digits_per_byte() {
        let all: Vec<u8> = (0..=255).collect();
        let expected: String = all.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex(&all), expected);
        assert_eq!(hex(&[]), "");
    }

    #[test]
    fn shared_values_hold_their_text_inline_or_not_and_refuse_invalid_text() {
        for len in [0, 1, 61, 62, 63, 200, 300] {
            let text = "v".repeat(len);
            let v = shared_value(text.as_bytes()).unwrap();
            assert_eq!(v.as_bytes(), text.as_bytes());
            assert_eq!(v.clone(), v);
            let f = shared_fmt(format_args!("{text}:{len}")).unwrap();
            assert_eq!(f.to_str().unwrap(), format!("{text}:{len}"));
        }
        assert!(shared_value(b"bad\nvalue").is_none());
        assert!(
            shared_value("caf\u{e9}".as_bytes()).is_none(),
            "as HeaderValue::from_str"
        );
        assert!(shared_fmt(format_args!("bad\r{}", 1)).is_none());
    }

    #[test]
    fn decimal_matches_the_standard_formatting_on_both_sides_of_the_shared_range() {
        for n in (0..3000).chain([9_999, 10_000, 123_456_789, u64::MAX]) {
            assert_eq!(decimal(n).to_str().unwrap(), n.to_string(), "{n}");
        }
    }
}
