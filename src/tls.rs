//! TLS for the HTTPS listener: the operator's certificate, or a self-signed one made once and reused.

use std::path::{Path, PathBuf};

use anyhow::Context;

pub struct CertPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub generated: bool,
}

/// Use the given certificate, or create `<data-dir>/tls/cert.pem` and `key.pem` (subject alt names
/// `localhost`, `127.0.0.1` and the portal domain) unless they exist already.
pub fn ensure_certificate(
    cert: Option<&Path>,
    key: Option<&Path>,
    data_dir: &Path,
    domain: &str,
) -> anyhow::Result<CertPaths> {
    if let (Some(cert), Some(key)) = (cert, key) {
        return Ok(CertPaths { cert: cert.into(), key: key.into(), generated: false });
    }
    let dir = data_dir.join("tls");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    if cert_path.exists() && key_path.exists() {
        return Ok(CertPaths { cert: cert_path, key: key_path, generated: false });
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    if !domain.is_empty() && !names.iter().any(|n| n == domain) {
        names.push(domain.to_string());
    }
    let mut params = rcgen::CertificateParams::new(names).context("naming the self-signed certificate")?;
    // A name of its own per certificate: a client that trusts two crmchat certificates at once (two servers in
    // one test run) looks a self-signed issuer up by its name, and with rcgen's fixed default name it would
    // check the second server's certificate against the first one's key and refuse it.
    let mut name = rcgen::DistinguishedName::new();
    let serial = crate::secrets::random_alphanumeric(12);
    name.push(rcgen::DnType::CommonName, format!("crmchat {domain} {serial}"));
    params.distinguished_name = name;
    let key_pair = rcgen::KeyPair::generate().context("generating a key pair")?;
    let cert = params.self_signed(&key_pair).context("generating a self-signed certificate")?;
    std::fs::write(&cert_path, cert.pem()).with_context(|| format!("writing {}", cert_path.display()))?;
    write_private(&key_path, key_pair.serialize_pem().as_bytes())?;
    Ok(CertPaths { cert: cert_path, key: key_path, generated: true })
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path).with_context(|| format!("writing {}", path.display()))?;
    file.write_all(bytes)?;
    Ok(())
}
