//! SentDM webhook signatures (CONTRACT §5.2): Standard Webhooks with Sent's header names.
//!
//! The simulator signs with it and the action verifies with it, so both sides share one
//! definition of the scheme. Only `v1,` + base64 HMAC-SHA256 over `{id}.{timestamp}.{body}`
//! is accepted: the hex-of-body "legacy" fallback some integrations carry is not a SentDM
//! scheme and would only widen the attack surface (CONTRACT §7.12).

use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Header carrying the webhook endpoint's UUID (constant per webhook, never an event id).
pub const HEADER_WEBHOOK_ID: &str = "x-webhook-id";
/// Header carrying the unix-seconds timestamp of this delivery attempt.
pub const HEADER_TIMESTAMP: &str = "x-webhook-timestamp";
/// Header carrying one or more space-separated `v1,<base64>` signatures.
pub const HEADER_SIGNATURE: &str = "x-webhook-signature";
/// Unsigned informational header (`message.delivered`, ...); never trust it over the body.
pub const HEADER_EVENT_TYPE: &str = "x-webhook-event-type";
/// Per-event id, stable across retries (SDK 0.46 only; may be absent).
pub const HEADER_EVENT_ID: &str = "x-webhook-event-id";

/// Accepted clock skew in either direction, as Sent's own receivers use.
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

const SECRET_PREFIX: &str = "whsec_";
const SIGNATURE_PREFIX: &str = "v1,";
const MAC_LEN: usize = 32;

// Secrets are decoded leniently (missing padding, URL-safe alphabet) because stored secrets
// have passed through config files and environment variables written by humans.
const LENIENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);

type HmacSha256 = Hmac<Sha256>;

/// Why a stored secret cannot be used. On the receiving side this is our configuration
/// error (answer 503 and alert), not the sender's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("signing secret does not start with `whsec_`")]
    MissingPrefix,
    #[error("signing secret is not valid base64 after `whsec_`")]
    InvalidBase64,
    #[error("signing secret decodes to an empty key")]
    Empty,
}

/// Why a delivery was rejected. Every variant maps to 401 at the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("header {0} is not valid")]
    InvalidHeader(&'static str),
    #[error("timestamp outside the accepted window")]
    TimestampOutOfWindow,
    #[error("no signature matches")]
    NoMatch,
}

/// A webhook signing secret with its HMAC key schedule precomputed, so verifying a
/// delivery costs one HMAC and no allocation.
#[derive(Clone)]
pub struct SigningSecret {
    encoded: Box<str>,
    mac: HmacSha256,
}

impl SigningSecret {
    /// Parses a `whsec_<base64>` secret as SentDM returns it from create / rotate-secret.
    pub fn parse(secret: &str) -> Result<Self, SecretError> {
        let secret = secret.trim();
        let b64 = secret
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SecretError::MissingPrefix)?;
        let key = STANDARD_LENIENT
            .decode(b64)
            .or_else(|_| URL_SAFE_LENIENT.decode(b64))
            .map_err(|_| SecretError::InvalidBase64)?;
        if key.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Self::from_parts(secret.into(), &key))
    }

    /// Builds a secret from raw key bytes (the simulator generates 32 random bytes).
    pub fn from_key(key: &[u8]) -> Result<Self, SecretError> {
        if key.is_empty() {
            return Err(SecretError::Empty);
        }
        let encoded = format!("{SECRET_PREFIX}{}", STANDARD.encode(key));
        Ok(Self::from_parts(encoded.into(), key))
    }

    fn from_parts(encoded: Box<str>, key: &[u8]) -> Self {
        // HMAC accepts keys of any length; this cannot fail for a non-empty slice.
        let mac = match HmacSha256::new_from_slice(key) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC-SHA256 accepts keys of every length"),
        };
        Self { encoded, mac }
    }

    /// The `whsec_...` form, for persisting. Deliberately not `Display`, so it cannot end
    /// up in a log line by accident.
    pub fn expose(&self) -> &str {
        &self.encoded
    }

    /// Raw 32-byte HMAC over `{webhook_id}.{timestamp}.{body}`.
    pub fn mac(&self, webhook_id: &str, timestamp: &str, body: &[u8]) -> [u8; MAC_LEN] {
        let mut mac = self.mac.clone();
        mac.update(webhook_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().into()
    }

    /// The `x-webhook-signature` value SentDM sends: `v1,<base64 HMAC>`.
    pub fn sign(&self, webhook_id: &str, timestamp: i64, body: &[u8]) -> String {
        let mac = self.mac(webhook_id, &timestamp.to_string(), body);
        format!("{SIGNATURE_PREFIX}{}", STANDARD.encode(mac))
    }

    /// Verifies one delivery. `now` is unix seconds; the window is inclusive
    /// (`|now - ts| <= tolerance_secs`).
    pub fn verify(
        &self,
        parts: &SignedParts<'_>,
        body: &[u8],
        now: i64,
        tolerance_secs: i64,
    ) -> Result<(), VerifyError> {
        verify_with(std::slice::from_ref(self), parts, body, now, tolerance_secs)
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret(whsec_***)")
    }
}

impl PartialEq for SigningSecret {
    fn eq(&self, other: &Self) -> bool {
        self.encoded
            .as_bytes()
            .ct_eq(other.encoded.as_bytes())
            .into()
    }
}

impl Eq for SigningSecret {}

/// The three signed headers of one delivery, borrowed from the request.
#[derive(Debug, Clone, Copy)]
pub struct SignedParts<'a> {
    pub webhook_id: &'a str,
    pub timestamp: &'a str,
    pub signature: &'a str,
}

impl<'a> SignedParts<'a> {
    /// Reads the signed headers; any missing or non-ASCII header is a rejection.
    pub fn from_headers(headers: &'a http::HeaderMap) -> Result<Self, VerifyError> {
        fn get<'h>(h: &'h http::HeaderMap, name: &'static str) -> Result<&'h str, VerifyError> {
            h.get(name)
                .ok_or(VerifyError::MissingHeader(name))?
                .to_str()
                .map_err(|_| VerifyError::InvalidHeader(name))
        }
        Ok(Self {
            webhook_id: get(headers, HEADER_WEBHOOK_ID)?,
            timestamp: get(headers, HEADER_TIMESTAMP)?,
            signature: get(headers, HEADER_SIGNATURE)?,
        })
    }
}

/// Verifies against any of `secrets` (more than one only while a rotation is in flight).
pub fn verify_with(
    secrets: &[SigningSecret],
    parts: &SignedParts<'_>,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), VerifyError> {
    let ts: i64 = parts
        .timestamp
        .trim()
        .parse()
        .map_err(|_| VerifyError::InvalidHeader(HEADER_TIMESTAMP))?;
    if now.abs_diff(ts) > tolerance_secs.unsigned_abs() {
        return Err(VerifyError::TimestampOutOfWindow);
    }
    for secret in secrets {
        let expected = secret.mac(parts.webhook_id, parts.timestamp.trim(), body);
        for candidate in parts.signature.split(' ') {
            let Some(b64) = candidate.strip_prefix(SIGNATURE_PREFIX) else {
                continue;
            };
            // Decoding into a stack buffer keeps the hot path allocation-free; 48 bytes is
            // more than any 32-byte MAC needs, so a longer input simply fails to decode.
            let mut buf = [0u8; 48];
            let Ok(len) = STANDARD.decode_slice(b64, &mut buf) else {
                continue;
            };
            if len == MAC_LEN && bool::from(buf[..MAC_LEN].ct_eq(&expected)) {
                return Ok(());
            }
        }
    }
    Err(VerifyError::NoMatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const WEBHOOK_ID: &str = "d4f5a6b7-c8d9-4e0f-a1b2-c3d4e5f6a7b8";
    const BODY_A: &str = r#"{"field":"message","sub_type":"message.delivered","timestamp":"2026-01-01T00:00:00Z","payload":{"account_id":"7ba7b820-9dad-11d1-80b4-00c04fd430c8","message_id":"8ba7b830-9dad-11d1-80b4-00c04fd430c8","message_status":"DELIVERED","channel":"sms","outbound_number":"+14155551234","template_id":"9ba7b840-9dad-11d1-80b4-00c04fd430c8","updated_at":"2025-12-31T23:59:58Z"}}"#;
    const SIG_A: &str = "v1,bzw7H8kG7pyLbBlUFnx/2NiKUSd05vP0YLLOSirsq6I=";
    const TS_A: i64 = 1_767_225_600;
    const BODY_B: &str = r#"{"field": "message", "sub_type": "message.failed", "timestamp": "2026-01-01T00:00:05Z", "payload": {"message_id": "8ba7b831-9dad-11d1-80b4-00c04fd430c8", "message_status": "FAILED", "channel": "whatsapp", "reason_code": "DELIVERY_007", "reason": "Destinatário não registrado"}}"#;
    const SIG_B: &str = "v1,OECToup2EaJJbMqZZm7zQ/mSBQKbcPSuAznI3pYpQy8=";
    const TS_B: i64 = 1_767_225_605;

    fn secret() -> SigningSecret {
        SigningSecret::parse(SECRET).unwrap()
    }

    fn parts<'a>(id: &'a str, ts: &'a str, sig: &'a str) -> SignedParts<'a> {
        SignedParts {
            webhook_id: id,
            timestamp: ts,
            signature: sig,
        }
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn vector_lengths_match_contract() {
        assert_eq!(BODY_A.len(), 368);
        assert_eq!(BODY_B.len(), 279);
    }

    #[test]
    fn vector_a_signs_and_verifies() {
        let s = secret();
        assert_eq!(s.sign(WEBHOOK_ID, TS_A, BODY_A.as_bytes()), SIG_A);
        assert_eq!(
            hex(&s.mac(WEBHOOK_ID, &TS_A.to_string(), BODY_A.as_bytes())),
            "6f3c3b1fc906ee9c8b6c1954167c7fd8d88a512774e6f3f460b2ce4a2aecaba2"
        );
        let ts = TS_A.to_string();
        s.verify(&parts(WEBHOOK_ID, &ts, SIG_A), BODY_A.as_bytes(), TS_A, 300)
            .unwrap();
    }

    #[test]
    fn vector_b_signs_utf8_bytes() {
        let s = secret();
        assert_eq!(s.sign(WEBHOOK_ID, TS_B, BODY_B.as_bytes()), SIG_B);
        assert_eq!(
            hex(&s.mac(WEBHOOK_ID, &TS_B.to_string(), BODY_B.as_bytes())),
            "384093a2ea7611a2496cca99666ef343f99205029b70f4ae0339c8de9629432f"
        );
    }

    #[test]
    fn vector_a_negative_checks() {
        let s = secret();
        let ts = TS_A.to_string();
        let tampered = BODY_A.replace("DELIVERED", "READ");
        assert_eq!(
            s.sign(WEBHOOK_ID, TS_A, tampered.as_bytes()),
            "v1,gpDX4gecBbWRmjS2RoHzzLR3WbTFpWQNX5uqI5pN6TU="
        );
        assert_eq!(
            s.verify(
                &parts(WEBHOOK_ID, &ts, SIG_A),
                tampered.as_bytes(),
                TS_A,
                300
            ),
            Err(VerifyError::NoMatch)
        );
        let other_id = "00000000-0000-0000-0000-000000000000";
        assert_eq!(
            s.sign(other_id, TS_A, BODY_A.as_bytes()),
            "v1,jMqsptu2Q4TFot4ubH2AoOVY4pc5JGWaCpW7VFf9XGo="
        );
        assert_eq!(
            s.verify(&parts(other_id, &ts, SIG_A), BODY_A.as_bytes(), TS_A, 300),
            Err(VerifyError::NoMatch)
        );
        for now in [1_767_225_901, 1_767_225_299] {
            assert_eq!(
                s.verify(&parts(WEBHOOK_ID, &ts, SIG_A), BODY_A.as_bytes(), now, 300),
                Err(VerifyError::TimestampOutOfWindow)
            );
        }
        for now in [TS_A + 300, TS_A - 300] {
            s.verify(&parts(WEBHOOK_ID, &ts, SIG_A), BODY_A.as_bytes(), now, 300)
                .unwrap();
        }
        let zeros = "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        assert_eq!(
            s.verify(&parts(WEBHOOK_ID, &ts, zeros), BODY_A.as_bytes(), TS_A, 300),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            SigningSecret::parse("not-a-whsec").unwrap_err(),
            SecretError::MissingPrefix
        );
    }

    #[test]
    fn missing_headers_are_rejected() {
        let mut headers = http::HeaderMap::new();
        headers.insert(HEADER_WEBHOOK_ID, WEBHOOK_ID.parse().unwrap());
        headers.insert(HEADER_TIMESTAMP, TS_A.to_string().parse().unwrap());
        assert_eq!(
            SignedParts::from_headers(&headers).unwrap_err(),
            VerifyError::MissingHeader(HEADER_SIGNATURE)
        );
        headers.insert(HEADER_SIGNATURE, SIG_A.parse().unwrap());
        let p = SignedParts::from_headers(&headers).unwrap();
        secret().verify(&p, BODY_A.as_bytes(), TS_A, 300).unwrap();
    }

    #[test]
    fn several_signatures_and_rotation() {
        let s = secret();
        let ts = TS_A.to_string();
        let multi = format!("v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= {SIG_A}");
        s.verify(
            &parts(WEBHOOK_ID, &ts, &multi),
            BODY_A.as_bytes(),
            TS_A,
            300,
        )
        .unwrap();
        let other = SigningSecret::from_key(&[7u8; 32]).unwrap();
        verify_with(
            &[other.clone(), s],
            &parts(WEBHOOK_ID, &ts, SIG_A),
            BODY_A.as_bytes(),
            TS_A,
            300,
        )
        .unwrap();
        assert_eq!(
            other.verify(&parts(WEBHOOK_ID, &ts, SIG_A), BODY_A.as_bytes(), TS_A, 300),
            Err(VerifyError::NoMatch)
        );
    }

    #[test]
    fn hex_of_body_is_not_accepted() {
        // The "legacy" scheme (hex HMAC of the body alone, `sha256=` prefix) must fail.
        let key: Vec<u8> = (0u8..32).collect();
        let mut mac = HmacSha256::new_from_slice(&key).unwrap();
        mac.update(BODY_A.as_bytes());
        let legacy = format!("sha256={}", hex(&mac.finalize().into_bytes()));
        let ts = TS_A.to_string();
        for sig in [legacy.as_str(), legacy.trim_start_matches("sha256=")] {
            assert_eq!(
                secret().verify(&parts(WEBHOOK_ID, &ts, sig), BODY_A.as_bytes(), TS_A, 300),
                Err(VerifyError::NoMatch)
            );
        }
    }

    #[test]
    fn lenient_secret_decoding_and_redaction() {
        let unpadded = SECRET.trim_end_matches('=');
        assert_eq!(
            SigningSecret::parse(unpadded)
                .unwrap()
                .mac(WEBHOOK_ID, "1", b"x"),
            secret().mac(WEBHOOK_ID, "1", b"x")
        );
        assert_eq!(
            SigningSecret::parse("whsec_!!!").unwrap_err(),
            SecretError::InvalidBase64
        );
        assert_eq!(
            SigningSecret::parse("whsec_").unwrap_err(),
            SecretError::Empty
        );
        let generated = SigningSecret::from_key(&(0u8..32).collect::<Vec<_>>()).unwrap();
        assert_eq!(generated.expose(), SECRET);
        assert!(!format!("{generated:?}").contains("AAEC"));
    }
}
