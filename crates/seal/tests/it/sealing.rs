//! Sealing and opening: round trips, wrong keys, tampering, moved values, rotation.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use lwa_seal::{AeadIdentity, Keyring, MalformedValue, MasterKey, OpenError, SealedValue};

const TOKEN: &str = "Atzr|IwEBIJ-very-secret-refresh-token";

fn refresh_token_of(owner: &str) -> AeadIdentity {
    AeadIdentity::new(owner, "refresh_token")
}

/// The sealed text with one byte of its decoded payload flipped at `index`
/// (0..24 is the nonce, the last 16 bytes are the tag).
fn flip_payload_byte(text: &str, index: usize) -> String {
    let (head, payload) = text.rsplit_once('.').unwrap();
    let mut bytes = URL_SAFE_NO_PAD.decode(payload).unwrap();
    bytes[index] ^= 0x01;
    format!("{head}.{}", URL_SAFE_NO_PAD.encode(bytes))
}

#[test]
fn seal_then_open_gives_back_the_plaintext() {
    let keyring = Keyring::new(MasterKey::generate());
    let identity = refresh_token_of("acme");
    for plaintext in [&b""[..], b"x", TOKEN.as_bytes(), &[0xa5; 400][..]] {
        let sealed = keyring.seal(plaintext, &identity);
        assert_eq!(sealed.fingerprint(), keyring.newest_fingerprint());
        assert_eq!(&keyring.open(&sealed, &identity).unwrap()[..], plaintext);

        let text = sealed.to_string();
        assert_eq!(SealedValue::parse(&text).unwrap(), sealed);
        assert_eq!(&keyring.open_str(&text, &identity).unwrap()[..], plaintext);
    }
}

#[test]
fn sealed_text_has_the_documented_shape_and_hides_the_plaintext() {
    let keyring = Keyring::new(MasterKey::generate());
    let sealed = keyring.seal(TOKEN.as_bytes(), &refresh_token_of("acme"));
    let text = sealed.to_string();
    let parts: Vec<&str> = text.split('.').collect();
    assert_eq!(parts.len(), 3);
    assert_eq!(parts[0], "lwa1");
    assert_eq!(parts[1], keyring.newest_fingerprint().to_string());
    let payload = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    assert_eq!(payload.len(), 24 + TOKEN.len() + 16);
    assert!(!text.contains("Atzr"));
    assert!(!payload.windows(4).any(|window| window == b"Atzr"));

    let debug = format!("{sealed:?}");
    assert!(!debug.contains(parts[2]), "{debug}");
}

#[test]
fn every_seal_uses_a_new_nonce() {
    let keyring = Keyring::new(MasterKey::generate());
    let identity = refresh_token_of("acme");
    let nonces: std::collections::HashSet<String> = (0..100)
        .map(|_| keyring.seal(TOKEN.as_bytes(), &identity).to_string()[22..54].to_owned())
        .collect();
    assert_eq!(nonces.len(), 100);
}

#[test]
fn a_value_sealed_elsewhere_opens_here_known_answer() {
    // Sealed by an independent Python implementation (HKDF-SHA256 from hashlib/hmac,
    // HChaCha20 by hand, ChaCha20-Poly1305 from `cryptography`) with the master key
    // 00 01 .. 1f, nonce 64 65 .. 7b and the identity acme/refresh_token. Values at rest must
    // keep opening across releases.
    let key = MasterKey::from_base64(&STANDARD.encode((0u8..32).collect::<Vec<_>>())).unwrap();
    let keyring = Keyring::new(key);
    let sealed =
        "lwa1.74281c43e7255497.ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp77XLEOrr-3SYM7qB8cLwodXITd9fOLJ3z9Q6eWzYKflFH";
    let opened = keyring.open_str(sealed, &refresh_token_of("acme")).unwrap();
    assert_eq!(&opened[..], b"Atzr|known-answer");
}

#[test]
fn a_value_sealed_with_an_unknown_key_names_the_expected_fingerprint() {
    let old = MasterKey::generate();
    let sealed = Keyring::new(old.clone()).seal(TOKEN.as_bytes(), &refresh_token_of("acme"));
    let other = MasterKey::generate();
    let keyring = Keyring::new(other.clone());

    let error = keyring.open(&sealed, &refresh_token_of("acme")).unwrap_err();
    match &error {
        OpenError::UnknownKey { expected, available } => {
            assert_eq!(*expected, old.fingerprint());
            assert_eq!(*available, vec![other.fingerprint()]);
        }
        other => panic!("expected UnknownKey, got {other:?}"),
    }
    assert_eq!(
        error.to_string(),
        format!(
            "sealed with master key {}, which is not configured (configured: {})",
            old.fingerprint(),
            other.fingerprint()
        )
    );
}

#[test]
fn a_flipped_byte_in_the_ciphertext_nonce_or_tag_is_rejected() {
    let keyring = Keyring::new(MasterKey::generate());
    let identity = refresh_token_of("acme");
    let text = keyring.seal(TOKEN.as_bytes(), &identity).to_string();
    let last = 24 + TOKEN.len() + 16 - 1;
    for index in [0, 12, 23, 24, 30, 24 + TOKEN.len() - 1, 24 + TOKEN.len(), last] {
        let tampered = flip_payload_byte(&text, index);
        let error = keyring.open_str(&tampered, &identity).unwrap_err();
        assert!(
            matches!(&error, OpenError::Rejected { fingerprint, identity: i }
                if *fingerprint == keyring.newest_fingerprint() && *i == identity),
            "byte {index}: {error:?}"
        );
        assert!(!error.to_string().contains("Atzr"));
        assert!(!error.to_string().contains(&tampered[22..]));
    }
}

#[test]
fn a_changed_fingerprint_is_refused() {
    let keyring = Keyring::new(MasterKey::generate());
    let identity = refresh_token_of("acme");
    let text = keyring.seal(TOKEN.as_bytes(), &identity).to_string();

    let mut other_hex = text.clone().into_bytes();
    other_hex[5] = if other_hex[5] == b'0' { b'1' } else { b'0' };
    let other_hex = String::from_utf8(other_hex).unwrap();
    assert!(matches!(
        keyring.open_str(&other_hex, &identity),
        Err(OpenError::UnknownKey { .. })
    ));

    let upper = text.replacen(&text[5..21], &text[5..21].to_uppercase(), 1);
    if upper != text {
        assert!(matches!(
            keyring.open_str(&upper, &identity),
            Err(OpenError::Malformed(MalformedValue::BadFingerprint))
        ));
    }
}

#[test]
fn a_value_moved_to_another_owner_or_field_is_rejected() {
    let keyring = Keyring::new(MasterKey::generate());
    let sealed = keyring.seal(TOKEN.as_bytes(), &AeadIdentity::new("acme", "refresh_token"));
    let fp = keyring.newest_fingerprint();

    let error = keyring
        .open(&sealed, &AeadIdentity::new("globex", "refresh_token"))
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("sealed value does not belong to globex/refresh_token or was altered (key {fp})")
    );

    let error = keyring
        .open(&sealed, &AeadIdentity::new("acme", "client_secret"))
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("sealed value does not belong to acme/client_secret or was altered (key {fp})")
    );
}

#[test]
fn identity_encoding_is_unambiguous() {
    let keyring = Keyring::new(MasterKey::generate());
    let pairs = [
        (("ab", "c"), ("a", "bc")),
        (("a\0b", "c"), ("a", "b\0c")),
        (("", "ab"), ("ab", "")),
        (("a/b", "c"), ("a", "b/c")),
    ];
    for ((owner, field), (other_owner, other_field)) in pairs {
        let sealed = keyring.seal(b"v", &AeadIdentity::new(owner, field));
        assert!(keyring.open(&sealed, &AeadIdentity::new(owner, field)).is_ok());
        assert!(matches!(
            keyring.open(&sealed, &AeadIdentity::new(other_owner, other_field)),
            Err(OpenError::Rejected { .. })
        ));
    }
}

#[test]
fn two_keys_coexist_and_reseal_moves_values_to_the_newest() {
    let old = MasterKey::generate();
    let new = MasterKey::generate();
    let identity = refresh_token_of("acme");
    let sealed_old = Keyring::new(old.clone()).seal(TOKEN.as_bytes(), &identity);

    let rotated = Keyring::new(new.clone()).with_older(old.clone());
    assert_eq!(rotated.newest_fingerprint(), new.fingerprint());
    assert_eq!(rotated.fingerprints(), [new.fingerprint(), old.fingerprint()]);

    // Old values still open; new seals use the new key.
    assert_eq!(
        &rotated.open(&sealed_old, &identity).unwrap()[..],
        TOKEN.as_bytes()
    );
    let sealed_new = rotated.seal(TOKEN.as_bytes(), &identity);
    assert_eq!(sealed_new.fingerprint(), new.fingerprint());
    assert!(rotated.needs_reseal(&sealed_old));
    assert!(!rotated.needs_reseal(&sealed_new));

    let resealed = rotated.reseal(&sealed_old, &identity).unwrap();
    assert_eq!(resealed.fingerprint(), new.fingerprint());
    assert!(!rotated.needs_reseal(&resealed));

    // Once every value is resealed, the old key can go.
    let new_only = Keyring::new(new);
    assert_eq!(
        &new_only.open(&resealed, &identity).unwrap()[..],
        TOKEN.as_bytes()
    );
    assert!(matches!(
        new_only.open(&sealed_old, &identity),
        Err(OpenError::UnknownKey { .. })
    ));
}

#[test]
fn malformed_values_are_refused_without_echoing_them() {
    let keyring = Keyring::new(MasterKey::generate());
    let valid = keyring.seal(b"x", &refresh_token_of("acme")).to_string();
    let fp = keyring.newest_fingerprint();
    let cases = [
        ("Atzr|plaintext-secret", MalformedValue::UnknownVersion),
        ("", MalformedValue::UnknownVersion),
        ("lwa2.0011223344556677.AAAA", MalformedValue::UnknownVersion),
        ("lwa1", MalformedValue::WrongShape),
        ("lwa1.0011223344556677", MalformedValue::WrongShape),
        (&format!("{valid}.extra"), MalformedValue::WrongShape),
        ("lwa1.00112233.AAAA", MalformedValue::BadFingerprint),
        ("lwa1.zz11223344556677.AAAA", MalformedValue::BadFingerprint),
        (&format!("lwa1.{fp}.secret+chars/=="), MalformedValue::BadBase64),
        (&format!("{valid}="), MalformedValue::BadBase64),
        (&format!("lwa1.{fp}.AAAA"), MalformedValue::TooShort { got: 3 }),
    ];
    for (text, expected) in cases {
        let error = SealedValue::parse(text).unwrap_err();
        assert_eq!(error, expected, "{text}");
        let open_error = keyring.open_str(text, &refresh_token_of("acme")).unwrap_err();
        assert!(matches!(open_error, OpenError::Malformed(e) if e == expected));
        let message = open_error.to_string();
        assert!(message.starts_with("malformed sealed value: "), "{message}");
        assert!(!message.contains("secret"), "{message}");
        assert!(!message.contains("plaintext"), "{message}");
    }
}

#[test]
fn keyring_debug_shows_fingerprints_only() {
    let key = MasterKey::generate();
    let keyring = Keyring::new(key.clone());
    let debug = format!("{keyring:?}");
    assert!(debug.contains(&key.fingerprint().to_string()), "{debug}");
    assert!(!debug.contains(key.to_base64().as_str()));
}
