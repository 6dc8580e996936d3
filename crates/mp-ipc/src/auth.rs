//! CPython's mutual challenge–response authentication (`multiprocessing.connection.deliver_challenge` /
//! `answer_challenge`), byte for byte.
//!
//! The challenger sends `#CHALLENGE#` and a message; the answerer replies with an HMAC of the message under
//! the shared key; the challenger answers `#WELCOME#` or `#FAILURE#`. Python 3.12+ challenges with
//! `{sha256}` and 40 random bytes and expects `{sha256}` + HMAC-SHA256 over the whole message (prefix
//! included); Python 3.11 challenges with 20 bare random bytes and expects a bare 16-byte HMAC-MD5. We
//! challenge like 3.12+, accept both reply forms, and answer either form of challenge. A server challenges
//! first, then the roles swap.

use hmac::{Hmac, Mac};

use crate::{AuthenticationError, Connection};

const CHALLENGE: &[u8] = b"#CHALLENGE#";
const WELCOME: &[u8] = b"#WELCOME#";
const FAILURE: &[u8] = b"#FAILURE#";
/// Random bytes in our challenge (CPython 3.12+'s `MESSAGE_LENGTH`).
const MESSAGE_LENGTH: usize = 40;
/// A bare (legacy) challenge's length, and a bare HMAC-MD5 reply's: CPython's `_LEGACY_LENGTHS`.
const LEGACY_CHALLENGE: usize = 20;
const MD5_LEN: usize = 16;
/// Every handshake message is at most this long (CPython's `recv_bytes(256)`).
const MAX_HANDSHAKE_MESSAGE: usize = 256;

/// The MAC algorithms a handshake message may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Digest {
    Md5,
    Sha256,
}

impl Digest {
    fn mac(self, key: &[u8], message: &[u8]) -> Vec<u8> {
        match self {
            Digest::Md5 => {
                let mut mac = Hmac::<md5::Md5>::new_from_slice(key).expect("HMAC takes keys of any length");
                mac.update(message);
                mac.finalize().into_bytes().to_vec()
            }
            Digest::Sha256 => {
                let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
                mac.update(message);
                mac.finalize().into_bytes().to_vec()
            }
        }
    }
}

/// CPython's `_get_digest_name_and_payload`: `None` for the legacy (bare, MD5) form.
fn digest_and_payload(message: &[u8]) -> Result<(Option<Digest>, &[u8]), AuthenticationError> {
    if message.len() == LEGACY_CHALLENGE || message.len() == MD5_LEN {
        return Ok((None, message));
    }
    if let Some(rest) = message.strip_prefix(b"{") {
        if let Some(close) = rest.iter().take(9).position(|&b| b == b'}') {
            let payload = &rest[close + 1..];
            return match &rest[..close] {
                b"sha256" => Ok((Some(Digest::Sha256), payload)),
                b"md5" => Ok((Some(Digest::Md5), payload)),
                other => Err(AuthenticationError::UnsupportedDigest(String::from_utf8_lossy(other).into_owned())),
            };
        }
    }
    Err(AuthenticationError::Protocol(format!(
        "unsupported message length, missing digest prefix or unsupported digest ({} bytes)",
        message.len()
    )))
}

fn recv(conn: &mut Connection) -> Result<Vec<u8>, AuthenticationError> {
    conn.recv_bytes_max(MAX_HANDSHAKE_MESSAGE).map_err(AuthenticationError::from_recv)
}

fn send(conn: &mut Connection, message: &[u8]) -> Result<(), AuthenticationError> {
    conn.send_bytes(message).map_err(|e| AuthenticationError::Protocol(format!("sending failed: {e}")))
}

/// Challenges the peer to prove it holds `key` (CPython's `deliver_challenge`).
pub(crate) fn deliver_challenge(conn: &mut Connection, key: &[u8]) -> Result<(), AuthenticationError> {
    let mut random = [0u8; MESSAGE_LENGTH];
    crate::sys::random_bytes(&mut random).map_err(|e| AuthenticationError::Protocol(e.to_string()))?;
    let mut message = b"{sha256}".to_vec();
    message.extend_from_slice(&random);
    send(conn, &[CHALLENGE, &message].concat())?;
    let response = recv(conn)?;
    match verify(key, &message, &response) {
        Ok(()) => send(conn, WELCOME),
        Err(e) => {
            let _ = send(conn, FAILURE);
            Err(e)
        }
    }
}

/// CPython's `_verify_challenge`: the reply may be a bare HMAC-MD5 or `{digest}` + HMAC.
fn verify(key: &[u8], message: &[u8], response: &[u8]) -> Result<(), AuthenticationError> {
    let (digest, mac) = digest_and_payload(response)?;
    let expected = digest.unwrap_or(Digest::Md5).mac(key, message);
    // Constant time: the comparison must not tell an attacker how many leading bytes were right.
    let same = expected.len() == mac.len() && expected.iter().zip(mac).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
    if same { Ok(()) } else { Err(AuthenticationError::DigestWrong) }
}

/// Proves to the peer that we hold `key` (CPython's `answer_challenge`).
pub(crate) fn answer_challenge(conn: &mut Connection, key: &[u8]) -> Result<(), AuthenticationError> {
    let message = recv(conn)?;
    let Some(message) = message.strip_prefix(CHALLENGE) else {
        return Err(AuthenticationError::Protocol("expected a challenge".into()));
    };
    if message.len() < LEGACY_CHALLENGE {
        return Err(AuthenticationError::Protocol(format!("challenge too short: {} bytes", message.len())));
    }
    let response = match digest_and_payload(message)?.0 {
        None => Digest::Md5.mac(key, message),
        Some(digest) => {
            let name: &[u8] = if digest == Digest::Md5 { b"{md5}" } else { b"{sha256}" };
            [name, &digest.mac(key, message)].concat()
        }
    };
    send(conn, &response)?;
    match recv(conn)?.as_slice() {
        WELCOME => Ok(()),
        _ => Err(AuthenticationError::Rejected),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_known_vectors() {
        // RFC 2202 test case 2 and RFC 4231 test case 2.
        let md5 = Digest::Md5.mac(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            md5,
            [0x75, 0x0c, 0x78, 0x3e, 0x6a, 0xb0, 0xb5, 0x03, 0xea, 0xa8, 0x6e, 0x31, 0x0a, 0x5d, 0xb7, 0x38]
        );
        let sha = Digest::Sha256.mac(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(&sha[..4], &[0x5b, 0xdc, 0xc1, 0x46]);
    }

    #[test]
    fn replies_are_parsed_as_cpython_does() {
        assert_eq!(digest_and_payload(&[7; 16]).unwrap(), (None, &[7u8; 16][..]));
        assert_eq!(digest_and_payload(b"{sha256}abc").unwrap(), (Some(Digest::Sha256), &b"abc"[..]));
        assert!(matches!(digest_and_payload(b"{sha512}abc"), Err(AuthenticationError::UnsupportedDigest(_))));
        assert!(matches!(digest_and_payload(b"garbage of some length"), Err(AuthenticationError::Protocol(_))));
        let message = b"{sha256}0123456789012345678901234567890123456789";
        let good = [&b"{sha256}"[..], &Digest::Sha256.mac(b"key", message)].concat();
        assert!(verify(b"key", message, &good).is_ok());
        assert!(matches!(verify(b"other", message, &good), Err(AuthenticationError::DigestWrong)));
        assert!(verify(b"key", message, &Digest::Md5.mac(b"key", message)).is_ok(), "3.11 replies are accepted");
    }
}
