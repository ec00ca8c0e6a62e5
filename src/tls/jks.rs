//! Reads the Java KeyStore (JKS) files that ZooKeeper's `ssl.keyStore.location` and
//! `ssl.trustStore.location` name, so that an existing zoo.cfg works unchanged.
//!
//! Layout (big-endian): magic `FEEDFEED`, version (1 or 2), entry count; per entry a tag
//! (1 private key, 2 trusted certificate), a modified-UTF-8 alias (u16 length), a u64
//! timestamp, then for a key the protected key (u32 length + DER EncryptedPrivateKeyInfo) and
//! its certificate chain, for a trusted entry one certificate; each certificate is (version 2)
//! a type name and a u32 length + DER. The file ends with SHA-1(password as UTF-16BE,
//! "Mighty Aphrodite", everything before the digest).
//!
//! A private key is protected with Sun's `KeyProtector`: 20 bytes of salt, the key XORed with
//! a SHA-1 keystream (d₀ = salt, dᵢ = SHA-1(password ‖ dᵢ₋₁)), then SHA-1(password ‖ key) as
//! a check. The plain key is a PKCS#8 PrivateKeyInfo. Untrusted bytes: every length is
//! checked, and a wrong password or a damaged file is an error, never a panic.

use sha1::{Digest, Sha1};

const MAGIC: u32 = 0xFEED_FEED;
const SUN_KEY_PROTECTOR_OID: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x2a, 0x02, 0x11, 0x01, 0x01];

#[derive(Debug, Default)]
pub struct KeyStore {
    /// (PKCS#8 key, certificate chain in DER, leaf first) per private key entry.
    pub keys: Vec<(Vec<u8>, Vec<Vec<u8>>)>,
    /// Trusted certificates (DER).
    pub trusted: Vec<Vec<u8>>,
}

struct Bytes<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Bytes<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.data.len() - self.at < n {
            return Err("keystore ends early".into());
        }
        let s = &self.data[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }
    fn u16(&mut self) -> Result<usize, String> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().expect("2")) as usize)
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn blob(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

fn password_bytes(password: &str) -> Vec<u8> {
    password.encode_utf16().flat_map(u16::to_be_bytes).collect()
}

/// Parses a JKS file with its store password (which also protects its keys, as ZooKeeper
/// assumes).
pub fn parse(data: &[u8], password: &str) -> Result<KeyStore, String> {
    if data.len() < 20 + 12 {
        return Err("not a Java KeyStore (too short)".into());
    }
    let body = &data[..data.len() - 20];
    let pw = password_bytes(password);
    let mut digest = Sha1::new();
    digest.update(&pw);
    digest.update(b"Mighty Aphrodite");
    digest.update(body);
    if digest.finalize().as_slice() != &data[data.len() - 20..] {
        return Err("keystore integrity check failed (wrong password or damaged file)".into());
    }
    let mut r = Bytes { data: body, at: 0 };
    if r.u32()? != MAGIC {
        return Err("not a Java KeyStore (bad magic; PKCS#12 stores are not read)".into());
    }
    let version = r.u32()?;
    if version != 1 && version != 2 {
        return Err(format!("unsupported JKS version {version}"));
    }
    let count = r.u32()?;
    let mut store = KeyStore::default();
    let certificate = |r: &mut Bytes<'_>| -> Result<Vec<u8>, String> {
        if version == 2 {
            let n = r.u16()?;
            r.take(n)?;
        }
        Ok(r.blob()?.to_vec())
    };
    for _ in 0..count {
        let tag = r.u32()?;
        let alias_len = r.u16()?;
        r.take(alias_len)?;
        r.take(8)?;
        match tag {
            1 => {
                let protected = r.blob()?;
                let key = unprotect(protected, &pw)?;
                let chain_len = r.u32()?;
                if chain_len > 64 {
                    return Err("certificate chain too long".into());
                }
                let mut chain = Vec::new();
                for _ in 0..chain_len {
                    chain.push(certificate(&mut r)?);
                }
                store.keys.push((key, chain));
            }
            2 => store.trusted.push(certificate(&mut r)?),
            other => return Err(format!("unknown keystore entry type {other}")),
        }
    }
    Ok(store)
}

/// Reads one DER TLV at the start of `data`: (tag, contents, rest).
fn der(data: &[u8]) -> Result<(u8, &[u8], &[u8]), String> {
    let bad = || "malformed DER in a protected key".to_string();
    let (&tag, rest) = data.split_first().ok_or_else(bad)?;
    let (&first, rest) = rest.split_first().ok_or_else(bad)?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return Err(bad());
        }
        let len = rest[..n].iter().fold(0usize, |a, b| (a << 8) | *b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return Err(bad());
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

fn unprotect(encrypted_info: &[u8], pw: &[u8]) -> Result<Vec<u8>, String> {
    // EncryptedPrivateKeyInfo ::= SEQUENCE { AlgorithmIdentifier, OCTET STRING }
    let (tag, seq, _) = der(encrypted_info)?;
    if tag != 0x30 {
        return Err("protected key is not a DER sequence".into());
    }
    let (tag, algorithm, rest) = der(seq)?;
    let (oid_tag, oid, _) = der(algorithm)?;
    if tag != 0x30 || oid_tag != 0x06 || oid != SUN_KEY_PROTECTOR_OID {
        return Err("the key is not protected with the JKS algorithm".into());
    }
    let (tag, protected, _) = der(rest)?;
    if tag != 0x04 || protected.len() < 40 {
        return Err("protected key too short".into());
    }
    let salt = &protected[..20];
    let encrypted = &protected[20..protected.len() - 20];
    let check = &protected[protected.len() - 20..];
    let mut key = Vec::with_capacity(encrypted.len());
    let mut block: Vec<u8> = salt.to_vec();
    for chunk in encrypted.chunks(20) {
        let mut h = Sha1::new();
        h.update(pw);
        h.update(&block);
        block = h.finalize().to_vec();
        key.extend(chunk.iter().zip(block.iter()).map(|(a, b)| a ^ b));
    }
    let mut h = Sha1::new();
    h.update(pw);
    h.update(&key);
    if h.finalize().as_slice() != check {
        return Err("wrong key password".into());
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a JKS the way Java's `JavaKeyStore.engineStore` does (the reverse of `parse`).
    fn build(password: &str, key: &[u8], chain: &[&[u8]], trusted: &[&[u8]]) -> Vec<u8> {
        let pw = password_bytes(password);
        let salt = [7u8; 20];
        let mut encrypted = Vec::new();
        let mut block = salt.to_vec();
        for chunk in key.chunks(20) {
            let mut h = Sha1::new();
            h.update(&pw);
            h.update(&block);
            block = h.finalize().to_vec();
            encrypted.extend(chunk.iter().zip(block.iter()).map(|(a, b)| a ^ b));
        }
        let mut h = Sha1::new();
        h.update(&pw);
        h.update(key);
        let mut protected = salt.to_vec();
        protected.extend(encrypted);
        protected.extend(h.finalize());
        let tlv = |tag: u8, body: &[u8]| {
            let mut out = vec![tag];
            if body.len() < 0x80 {
                out.push(body.len() as u8);
            } else {
                out.push(0x82);
                out.extend((body.len() as u16).to_be_bytes());
            }
            out.extend(body);
            out
        };
        let mut alg = tlv(0x06, SUN_KEY_PROTECTOR_OID);
        alg.extend([0x05, 0x00]);
        let mut info = tlv(0x30, &alg);
        info.extend(tlv(0x04, &protected));
        let info = tlv(0x30, &info);
        let mut out = Vec::new();
        out.extend(MAGIC.to_be_bytes());
        out.extend(2u32.to_be_bytes());
        out.extend(((1 + trusted.len()) as u32).to_be_bytes());
        let alias = |out: &mut Vec<u8>, a: &str| {
            out.extend((a.len() as u16).to_be_bytes());
            out.extend(a.as_bytes());
            out.extend(0u64.to_be_bytes());
        };
        let cert = |out: &mut Vec<u8>, c: &[u8]| {
            out.extend(5u16.to_be_bytes());
            out.extend(b"X.509");
            out.extend((c.len() as u32).to_be_bytes());
            out.extend(c);
        };
        out.extend(1u32.to_be_bytes());
        alias(&mut out, "server");
        out.extend((info.len() as u32).to_be_bytes());
        out.extend(&info);
        out.extend((chain.len() as u32).to_be_bytes());
        for c in chain {
            cert(&mut out, c);
        }
        for t in trusted {
            out.extend(2u32.to_be_bytes());
            alias(&mut out, "ca");
            cert(&mut out, t);
        }
        let mut h = Sha1::new();
        h.update(&pw);
        h.update(b"Mighty Aphrodite");
        h.update(&out);
        out.extend(h.finalize());
        out
    }

    #[test]
    fn keys_and_certificates_come_out_as_stored() {
        let key: Vec<u8> = (0..=200u8).collect();
        let file = build("apassword", &key, &[b"leaf", b"ca"], &[b"root"]);
        let store = parse(&file, "apassword").unwrap();
        assert_eq!(store.keys.len(), 1);
        assert_eq!(store.keys[0].0, key);
        assert_eq!(store.keys[0].1, vec![b"leaf".to_vec(), b"ca".to_vec()]);
        assert_eq!(store.trusted, vec![b"root".to_vec()]);
    }

    #[test]
    fn wrong_password_and_damage_are_errors_not_panics() {
        let file = build("apassword", &[1, 2, 3], &[b"leaf"], &[]);
        assert!(parse(&file, "other").is_err());
        for cut in 0..file.len() {
            assert!(parse(&file[..cut], "apassword").is_err());
        }
        let mut flipped = file.clone();
        flipped[40] ^= 0xff;
        assert!(parse(&flipped, "apassword").is_err());
    }
}
