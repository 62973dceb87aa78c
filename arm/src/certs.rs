//! Certificates carried inside a template, written out as the PEM files wasmgate's listeners and
//! backend settings read: `sslCertificates` are base64 PKCS#12 (PFX) bundles with a password,
//! `trustedRootCertificates` are base64 `.cer` files (DER, or PEM text).
//!
//! PKCS#12 is read with `p12-keystore` (pure Rust, already what the listener loader uses for
//! `certificate_pfx`), so one implementation decides which bundles are accepted.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// Writes certificate files into one folder, each at most once.
pub struct CertWriter {
    /// Where the files go.
    dir: PathBuf,
    /// How the configuration refers to that folder (relative to the configuration's folder, or
    /// absolute).
    shown: PathBuf,
    listeners: HashMap<String, (String, String)>,
    roots: HashMap<String, String>,
}

impl CertWriter {
    pub fn new(dir: PathBuf, shown: PathBuf) -> Self {
        CertWriter {
            dir,
            shown,
            listeners: HashMap::new(),
            roots: HashMap::new(),
        }
    }

    /// The folder written to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether any file was written.
    pub fn wrote_any(&self) -> bool {
        !self.listeners.is_empty() || !self.roots.is_empty()
    }

    /// Decodes a base64 PFX and writes `<name>.crt.pem` (the chain, leaf first) and
    /// `<name>.key.pem` (PKCS#8, readable by the owner only). Returns both paths as the
    /// configuration names them.
    pub fn listener(
        &mut self,
        name: &str,
        data: &str,
        password: &str,
    ) -> Result<(String, String), String> {
        if let Some(done) = self.listeners.get(name) {
            return Ok(done.clone());
        }
        let der = decode(data)?;
        let store = p12_keystore::KeyStore::from_pkcs12(
            &der,
            password,
            p12_keystore::Pkcs12ImportPolicy::Strict,
        )
        .map_err(|e| format!("not a PKCS#12 (PFX) bundle this password opens: {e}"))?;
        let Some((_, chain)) = store.private_key_chain() else {
            return Err("the PFX holds no private key with its certificate".into());
        };
        if chain.certs().is_empty() {
            return Err("the PFX holds no certificate for its private key".into());
        }
        let mut chain_pem = String::new();
        for c in chain.certs() {
            chain_pem += &pem("CERTIFICATE", c.as_der());
        }
        let key_pem = pem("PRIVATE KEY", chain.key().as_der());
        let stem = file_stem(name);
        let crt = self.write(&format!("{stem}.crt.pem"), chain_pem.as_bytes(), 0o644)?;
        let key = self.write(&format!("{stem}.key.pem"), key_pem.as_bytes(), 0o600)?;
        self.listeners
            .insert(name.to_string(), (crt.clone(), key.clone()));
        Ok((crt, key))
    }

    /// Decodes a base64 `.cer` (DER or PEM) and writes `<name>.root.pem`.
    pub fn trusted_root(&mut self, name: &str, data: &str) -> Result<String, String> {
        if let Some(done) = self.roots.get(name) {
            return Ok(done.clone());
        }
        let bytes = decode(data)?;
        let text = if bytes.starts_with(b"-----BEGIN") {
            String::from_utf8(bytes).map_err(|_| "the PEM certificate is not text".to_string())?
        } else {
            // DER must at least be an ASN.1 SEQUENCE (X.690 §8.9); anything else is not a
            // certificate.
            if bytes.first() != Some(&0x30) {
                return Err("not a certificate (expected DER or PEM after base64)".into());
            }
            pem("CERTIFICATE", &bytes)
        };
        let file = self.write(
            &format!("{}.root.pem", file_stem(name)),
            text.as_bytes(),
            0o644,
        )?;
        self.roots.insert(name.to_string(), file.clone());
        Ok(file)
    }

    /// Decodes a base64 trusted client CA (`.cer`: DER, or PEM text that may hold a whole
    /// chain) and writes `<name>.client-ca.pem`.
    pub fn trusted_client_ca(&mut self, name: &str, data: &str) -> Result<String, String> {
        let key = format!("client-ca/{name}");
        if let Some(done) = self.roots.get(&key) {
            return Ok(done.clone());
        }
        let bytes = decode(data)?;
        let text = if bytes.starts_with(b"-----BEGIN") {
            String::from_utf8(bytes).map_err(|_| "the PEM certificate is not text".to_string())?
        } else {
            if bytes.first() != Some(&0x30) {
                return Err("not a certificate (expected DER or PEM after base64)".into());
            }
            pem("CERTIFICATE", &bytes)
        };
        let file = self.write(
            &format!("{}.client-ca.pem", file_stem(name)),
            text.as_bytes(),
            0o644,
        )?;
        self.roots.insert(key, file.clone());
        Ok(file)
    }

    fn write(&self, file: &str, contents: &[u8], mode: u32) -> Result<String, String> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        let path = self.dir.join(file);
        // Replace rather than rewrite in place, so the mode applies to a new file.
        let _ = std::fs::remove_file(&path);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        f.write_all(contents)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(self.shown.join(file).display().to_string())
    }
}

fn decode(data: &str) -> Result<Vec<u8>, String> {
    // Templates often wrap long base64 values; whitespace is not part of the data.
    let compact: String = data.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.is_empty() {
        return Err("empty certificate data".into());
    }
    STANDARD
        .decode(compact.as_bytes())
        .map_err(|e| format!("not base64: {e}"))
}

/// RFC 7468 textual encoding: base64 in lines of 64 characters.
fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out += &format!("-----END {label}-----\n");
    out
}

/// A file name from an item name: letters, digits, `-`, `_` and `.` kept, the rest `_`;
/// lower case, since names that differ only in case are the same item in ARM.
fn file_stem(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect::<String>()
        .trim_start_matches('.')
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_lines_and_names() {
        let p = pem("CERTIFICATE", &[0u8; 100]);
        let lines: Vec<&str> = p.lines().collect();
        assert_eq!(lines[0], "-----BEGIN CERTIFICATE-----");
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines.last(), Some(&"-----END CERTIFICATE-----"));
        assert_eq!(file_stem("../My Cert/1"), "_my_cert_1");
    }

    #[test]
    fn bad_data_is_refused() {
        let dir = std::env::temp_dir().join(format!("wasmgate-arm-certs-{}", std::process::id()));
        let mut w = CertWriter::new(dir.clone(), dir.clone());
        assert!(
            w.listener("a", "not base64!", "")
                .unwrap_err()
                .contains("not base64")
        );
        assert!(w.listener("a", "", "").unwrap_err().contains("empty"));
        assert!(w.listener("a", "AAAA", "").unwrap_err().contains("PKCS#12"));
        assert!(
            w.trusted_root("r", "AAAA")
                .unwrap_err()
                .contains("not a certificate")
        );
        let pem_text = STANDARD.encode(pem("CERTIFICATE", &[0x30, 0x00]));
        let file = w.trusted_root("r", &pem_text).unwrap();
        assert!(
            std::fs::read_to_string(&file)
                .unwrap()
                .starts_with("-----BEGIN CERTIFICATE")
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
