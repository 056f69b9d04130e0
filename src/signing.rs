//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>):
//! signing secrets, and the signature of one call attempt.
//!
//! A signed call carries `webhook-id` (the call's id, the same on every
//! attempt), `webhook-timestamp` (Unix seconds of the attempt) and
//! `webhook-signature`: `v1,` + base64 of HMAC-SHA256 over
//! `{id}.{timestamp}.{body}`, one per secret, separated by spaces.

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use http::HeaderValue;
use sha2::Sha256;

use crate::clock::Clock;
use crate::config::ConfigError;

/// The header with the call's id, the same on every attempt of a call.
pub(crate) const WEBHOOK_ID: &str = "webhook-id";
/// The header with the attempt's time, in Unix seconds.
pub(crate) const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
/// The header with the attempt's signatures.
pub(crate) const WEBHOOK_SIGNATURE: &str = "webhook-signature";

const PREFIX: &str = "whsec_";
/// The signature scheme the spec defines for symmetric secrets.
pub(crate) const VERSION: &str = "v1";
const MIN_KEY_BYTES: usize = 24;
const MAX_KEY_BYTES: usize = 64;
/// The size of the secrets [`SigningSecret::generate`] makes.
const GENERATED_KEY_BYTES: usize = 32;

/// A Standard Webhooks symmetric signing secret: `whsec_` followed by the
/// base64 of 24 to 64 random bytes.
///
/// A webhook with signing secrets signs every call with each of them
/// (several during a rotation); a receiver given the same secrets checks the
/// signatures. Never shown: `Debug` prints `SigningSecret(<redacted>)`, there
/// is no `Display`, and errors never include it.
///
/// ```
/// use eventhook::SigningSecret;
///
/// let secret = SigningSecret::generate()?;
/// let text = secret.expose(); // "whsec_...": give it to the webhook's owner
/// assert!(text.starts_with("whsec_"));
/// assert_eq!(SigningSecret::new(&text)?, secret);
/// assert_eq!(format!("{secret:?}"), "SigningSecret(<redacted>)");
/// assert!(SigningSecret::new("whsec_c2hvcnQ=").is_err()); // 5 bytes: too short
/// # Ok::<(), eventhook::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct SigningSecret {
    key: Box<[u8]>,
    /// HMAC-SHA256 keyed with `key`, cloned for each signature instead of keyed again.
    mac: Hmac<Sha256>,
}

impl SigningSecret {
    /// Reads a `whsec_...` secret. The error says what is wrong (the
    /// prefix, the base64, the length), never the secret.
    pub fn new(secret: &str) -> Result<SigningSecret, ConfigError> {
        let invalid = |reason| ConfigError::InvalidSigningSecret { reason };
        let encoded = secret.strip_prefix(PREFIX).ok_or(invalid("it does not start with \"whsec_\""))?;
        let key = BASE64.decode(encoded).map_err(|_| invalid("what follows \"whsec_\" is not base64"))?;
        if key.len() < MIN_KEY_BYTES {
            return Err(invalid("it holds fewer than 24 bytes"));
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(invalid("it holds more than 64 bytes"));
        }
        SigningSecret::from_key(key.into_boxed_slice())
    }

    /// A new secret of 32 bytes from the operating system's random source.
    pub fn generate() -> Result<SigningSecret, ConfigError> {
        let mut key = [0u8; GENERATED_KEY_BYTES];
        getrandom::getrandom(&mut key).map_err(|error| ConfigError::NoRandomness { reason: error.to_string() })?;
        SigningSecret::from_key(Box::new(key))
    }

    fn from_key(key: Box<[u8]>) -> Result<SigningSecret, ConfigError> {
        // HMAC takes keys of any length; the error exists only for other MACs.
        let mac = Hmac::<Sha256>::new_from_slice(&key)
            .map_err(|_| ConfigError::InvalidSigningSecret { reason: "it cannot key HMAC-SHA256" })?;
        Ok(SigningSecret { key, mac })
    }

    /// The secret as text, `whsec_` + base64, to give to the webhook's owner
    /// or to store.
    pub fn expose(&self) -> String {
        format!("{PREFIX}{}", BASE64.encode(&self.key))
    }

    /// The Standard Webhooks signature of a call: `v1,` + base64 of
    /// HMAC-SHA256 over `{webhook_id}.{timestamp}.{body}`, as a
    /// `webhook-signature` value (for one secret). The dispatcher signs its
    /// calls itself; this is for a test call made by hand, for instance.
    ///
    /// ```
    /// use eventhook::SigningSecret;
    ///
    /// // The Standard Webhooks spec's example.
    /// let secret = SigningSecret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
    /// let signature = secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
    /// assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    /// # Ok::<(), eventhook::ConfigError>(())
    /// ```
    pub fn sign(&self, webhook_id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut signature = String::with_capacity(48);
        self.append_signature(webhook_id, timestamp, body, &mut signature);
        signature
    }

    /// Appends `v1,<base64>` to `signature`.
    fn append_signature(&self, id: &str, timestamp: i64, body: &[u8], signature: &mut String) {
        signature.push_str(VERSION);
        signature.push(',');
        BASE64.encode_string(self.tag(id, timestamp, body), signature);
    }

    /// HMAC-SHA256 of `{id}.{timestamp}.{body}`.
    pub(crate) fn tag(&self, id: &str, timestamp: i64, body: &[u8]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().into()
    }
}

impl PartialEq for SigningSecret {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for SigningSecret {}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("SigningSecret(<redacted>)")
    }
}

/// The `webhook-signature` value of one attempt: `v1,<base64>` for each
/// secret, separated by spaces.
pub(crate) fn signature_header(secrets: &[SigningSecret], id: &str, timestamp: i64, body: &[u8]) -> HeaderValue {
    let mut value = String::with_capacity(secrets.len() * 48);
    for secret in secrets {
        if !value.is_empty() {
            value.push(' ');
        }
        secret.append_signature(id, timestamp, body, &mut value);
    }
    // Base64, commas and spaces only: always a valid header value.
    let mut header = HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""));
    header.set_sensitive(true);
    header
}

/// A call's `webhook-id`: `msg_` and 32 hexadecimal digits, the core's
/// random prefix then the call's serial.
pub(crate) fn call_id(prefix: u64, serial: u64) -> String {
    format!("msg_{prefix:016x}{serial:016x}")
}

/// A random prefix for the `webhook-id`s of one dispatch core (one process
/// run), so that ids do not repeat after a restart; the wall time in
/// nanoseconds should the operating system have no random source.
pub(crate) fn call_id_prefix(clock: &dyn Clock) -> u64 {
    let mut bytes = [0u8; 8];
    match getrandom::getrandom(&mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => clock.wall_time().timestamp_nanos_opt().unwrap_or_default() as u64,
    }
}

/// Reads one signature of a `webhook-signature` value (`v1,<base64>`);
/// `None` for other schemes or malformed entries, which the spec says to skip.
pub(crate) fn decode_signature(entry: &str) -> Option<Vec<u8>> {
    let (version, encoded) = entry.split_once(',')?;
    (version == VERSION).then(|| BASE64.decode(encoded).ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Standard Webhooks spec's own example.
    #[test]
    fn the_spec_test_vector() {
        let secret = SigningSecret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let header =
            signature_header(&[secret], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
        assert_eq!(header, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(header.is_sensitive());
    }

    #[test]
    fn secrets_are_checked_and_never_shown() {
        let valid = format!("whsec_{}", BASE64.encode([7u8; 24]));
        assert!(SigningSecret::new(&valid).is_ok());
        assert!(SigningSecret::new(&format!("whsec_{}", BASE64.encode([7u8; 64]))).is_ok());
        for (bad, reason) in [
            (BASE64.encode([7u8; 24]), "it does not start with \"whsec_\""),
            ("whsec_not base64!".to_owned(), "what follows \"whsec_\" is not base64"),
            (format!("whsec_{}", BASE64.encode([7u8; 23])), "it holds fewer than 24 bytes"),
            (format!("whsec_{}", BASE64.encode([7u8; 65])), "it holds more than 64 bytes"),
            (String::new(), "it does not start with \"whsec_\""),
        ] {
            let error = SigningSecret::new(&bad).unwrap_err();
            assert_eq!(error, ConfigError::InvalidSigningSecret { reason }, "{bad}");
            let encoded = bad.trim_start_matches(PREFIX);
            let shown = format!("{error} {error:?}");
            assert!(encoded.is_empty() || !shown.contains(encoded), "{shown}");
        }
        let secret = SigningSecret::new(&valid).unwrap();
        assert_eq!(secret.expose(), valid);
        assert_eq!(format!("{secret:?}"), "SigningSecret(<redacted>)");
    }

    #[test]
    fn generated_secrets_are_new_and_read_back() {
        let first = SigningSecret::generate().unwrap();
        let second = SigningSecret::generate().unwrap();
        assert_ne!(first, second);
        assert_eq!(SigningSecret::new(&first.expose()).unwrap(), first);
        assert_eq!(first.key.len(), GENERATED_KEY_BYTES);
    }

    #[test]
    fn several_secrets_give_space_separated_signatures() {
        let one = SigningSecret::new(&format!("whsec_{}", BASE64.encode([1u8; 32]))).unwrap();
        let two = SigningSecret::new(&format!("whsec_{}", BASE64.encode([2u8; 32]))).unwrap();
        let both = signature_header(&[one.clone(), two.clone()], "msg_1", 10, b"[]");
        let alone = |secret: SigningSecret| signature_header(&[secret], "msg_1", 10, b"[]");
        let expected = format!("{} {}", alone(one).to_str().unwrap(), alone(two).to_str().unwrap());
        assert_eq!(both, expected.as_str());
        let entries: Vec<_> = both.to_str().unwrap().split(' ').map(decode_signature).collect();
        assert!(entries.iter().all(|entry| entry.as_ref().is_some_and(|tag| tag.len() == 32)));
        assert_eq!(decode_signature("v2,abcd"), None);
        assert_eq!(decode_signature("v1"), None);
    }
}
