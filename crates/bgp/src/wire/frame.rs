use super::{DecodeError, HEADER_LEN, MARKER, MAX_MESSAGE_LEN};

/// Checks the 19-octet header at the start of `buf`.
///
/// Returns the message length from the header, or `Ok(None)` when fewer than 19 octets are
/// buffered. Errors carry the Message Header Error NOTIFICATION (1/1, 1/2).
pub(crate) fn header_len(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        // A marker that is already wrong is an error even before the whole header is here.
        let have = buf.len().min(MARKER.len());
        if buf
            .get(..have)
            .is_some_and(|m| m.iter().any(|b| *b != 0xff))
        {
            return Err(DecodeError::NotSynchronized);
        }
        return Ok(None);
    };
    if header.get(..16) != Some(&MARKER[..]) {
        return Err(DecodeError::NotSynchronized);
    }
    let len = match (header.get(16), header.get(17)) {
        (Some(hi), Some(lo)) => u16::from_be_bytes([*hi, *lo]),
        _ => return Ok(None),
    };
    if usize::from(len) < HEADER_LEN || usize::from(len) > MAX_MESSAGE_LEN {
        return Err(DecodeError::BadLength(len));
    }
    Ok(Some(usize::from(len)))
}

/// Splits the first complete message off a TCP receive buffer.
///
/// `Ok(Some(msg))` is one whole message (header included; drain `msg.len()` octets and call
/// again), `Ok(None)` means more bytes are needed, `Err` is a header error to send as a
/// NOTIFICATION before closing. The message type is checked by [`super::decode`].
pub fn next_message(buf: &[u8]) -> Result<Option<&[u8]>, DecodeError> {
    match header_len(buf)? {
        Some(len) => Ok(buf.get(..len)),
        None => Ok(None),
    }
}
