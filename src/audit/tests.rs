use super::*;
use crate::crypto::testvec::{self, hex};

fn tenant(t: &str) -> TenantId {
    TenantId::parse(t).expect("tenant")
}

fn entry(sequence: u64) -> Entry {
    Entry {
        sequence,
        time: 1_795_388_400,
        tenant: "acme".into(),
        principal: Actor { kind: "jwt".into(), id: "u1".into() },
        operation: "protect".into(),
        schemes: vec!["pii".into()],
        key_versions: vec![1],
        items: Some(2),
        failed_items: Some(0),
        outcome: Outcome::Ok,
        status: 200,
        code: None,
    }
}

#[test]
fn golden_vector() {
    let cases = testvec::parse(include_str!("../../tests/vectors/veil-audit-v1.txt"));
    assert_eq!(cases.len(), 1);
    for c in &cases {
        let master = SecretKey::try_from_slice(&c.hex("master")).expect("32 bytes");
        let t = tenant(c.get("tenant"));
        assert_eq!(hex(&key_input(&t)), c.get("key_input"), "{}", c.name());
        assert_eq!(hex(&kdf::hmac_sha256(&master, &key_input(&t))), c.get("tenant_key"));
        let prev: [u8; 32] = c.hex("prev").try_into().expect("32 bytes");
        assert_eq!(hex(&aad(&t, &prev)), c.get("aad"));
        assert_eq!(serde_json::to_vec(&entry(1)).expect("json"), c.hex("entry"), "the entry's JSON layout");
        let key = TenantKey::derive(&master, &t);
        let sealed =
            key.aead.seal_with_nonce(&c.hex("nonce"), &c.hex("aad"), &c.hex("entry")).expect("nonce");
        assert_eq!(hex(&sealed), c.get("sealed"));
        assert_eq!(hex(&hash(&sealed)), c.get("hash"));
        assert_eq!(key.open(&prev, &sealed), Some(entry(1)));
    }
}

/// A chain of `n` rows of tenant acme.
fn chain(key: &TenantKey, n: u64) -> Vec<Row> {
    let mut rng = Csprng::from_seed([3; 32]);
    let mut prev = GENESIS;
    (1..=n)
        .map(|s| {
            let sealed = key.seal(&mut rng, &prev, &entry(s));
            let row = Row { sequence: s, prev: prev.to_vec(), sealed };
            prev = hash(&row.sealed);
            row
        })
        .collect()
}

fn verdict(key: &TenantKey, rows: &[Row], head_seq: u64, checkpoint: Option<(u64, [u8; 32])>) -> Verdict {
    let mut v = Verifier::new(key);
    if let Some((s, h)) = checkpoint {
        v.checkpoint(s, h);
    }
    for r in rows {
        if !v.feed(r) {
            break;
        }
    }
    v.finish(head_seq)
}

fn broken(sequence: u64, what: Broken) -> Verdict {
    Verdict::Broken { sequence, what, verified: sequence - 1 }
}

#[test]
fn verify_finds_each_break_at_its_entry() {
    let key = TenantKey::derive(&SecretKey::from_bytes([1; 32]), &tenant("acme"));
    let rows = chain(&key, 6);
    let head = hash(&rows[5].sealed);
    assert_eq!(verdict(&key, &rows, 6, None), Verdict::Ok { entries: 6, head });
    assert_eq!(verdict(&key, &[], 0, None), Verdict::Ok { entries: 0, head: GENESIS });

    let mut edited = rows.clone();
    edited[2].sealed[20] ^= 1;
    assert_eq!(verdict(&key, &edited, 6, None), broken(3, Broken::Edited));
    let mut edited_prev = rows.clone();
    edited_prev[3].prev[0] ^= 1;
    assert_eq!(verdict(&key, &edited_prev, 6, None), broken(4, Broken::Edited));

    let mut deleted = rows.clone();
    deleted.remove(3);
    assert_eq!(verdict(&key, &deleted, 6, None), broken(4, Broken::Deleted));

    // Swapped: rows 3 and 4 trade sequence numbers (so each is read at the other's place).
    let mut swapped = rows.clone();
    swapped.swap(2, 3);
    swapped[2].sequence = 3;
    swapped[3].sequence = 4;
    assert_eq!(verdict(&key, &swapped, 6, None), broken(3, Broken::Reordered));

    // Truncated: the last two rows gone; the head row still says 6, or an earlier head does.
    assert_eq!(
        verdict(&key, &rows[..4], 6, None),
        Verdict::Broken { sequence: 5, what: Broken::Truncated, verified: 4 }
    );
    assert_eq!(
        verdict(&key, &rows[..4], 4, Some((6, head))),
        Verdict::Broken { sequence: 5, what: Broken::Truncated, verified: 4 }
    );
    // An earlier head that the chain no longer passes through: history rewritten.
    assert_eq!(verdict(&key, &rows, 6, Some((5, head))), broken(5, Broken::Edited));
    assert_eq!(verdict(&key, &rows, 6, Some((6, head))), Verdict::Ok { entries: 6, head });

    // Another tenant's key opens nothing of acme's.
    let other = TenantKey::derive(&SecretKey::from_bytes([1; 32]), &tenant("other"));
    assert_eq!(verdict(&other, &rows, 6, None), broken(1, Broken::Edited));
}

#[test]
fn settings_need_32_bytes_and_hide_the_key() {
    use crate::vars::tests::MapVars;
    let b64 = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
    let s = Settings::load(&MapVars::default().with("audit_master_key", &b64)).expect("settings");
    assert!(s.tenant_key(&tenant("acme")).is_ok());
    assert!(!format!("{s:?}").contains(&b64));
    let none = Settings::load(&MapVars::default()).expect("missing is not an error yet");
    let e = none.tenant_key(&tenant("acme")).err().expect("needed when used");
    assert!(e.0.contains("audit_master_key"));
    for bad in ["AAEC", "not base64!"] {
        let e = Settings::load(&MapVars::default().with("audit_master_key", bad)).expect_err(bad);
        assert!(e.0.contains("audit_master_key") && !e.0.contains(bad), "{e}");
    }
    assert_eq!(parse_hex32(&to_hex(&[0xab; 32])), Some([0xab; 32]));
    assert_eq!(parse_hex32("zz"), None);
}
