//! Development certificates: a local CA and certificates it signs for nodes (rcgen). Production
//! brings its own certificate files; `meridian certs` and `meridian up` use these.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CertError + '_ {
    move |source| CertError::Io { path: path.display().to_string(), source }
}

/// A development certificate authority kept in a directory as `ca.pem` and `ca.key`.
pub struct DevCa {
    pub cert_path: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DevCa({})", self.cert_path.display())
    }
}

/// Write `text` to `path`, readable by the owner only when `secret`.
fn write(path: &Path, text: &str, secret: bool) -> Result<(), CertError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let _ = secret;
    let mut file = options.open(path).map_err(io(path))?;
    file.write_all(text.as_bytes()).map_err(io(path))
}

impl DevCa {
    /// The CA in `dir`, created (with the directory) when absent.
    pub fn open_or_create(dir: &Path) -> Result<Self, CertError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
        if cert_path.exists() && key_path.exists() {
            let key_pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
            let cert_pem = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
            let issuer = Issuer::from_ca_cert_pem(&cert_pem, KeyPair::from_pem(&key_pem)?)?;
            return Ok(Self { cert_path, issuer });
        }
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, "meridian development CA");
        params.distinguished_name.push(DnType::OrganizationName, "meridian");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        write(&key_path, &key.serialize_pem(), true)?;
        write(&cert_path, &cert.pem(), false)?;
        Ok(Self { cert_path, issuer: Issuer::new(params, key) })
    }

    /// Issue a server certificate for `names` (DNS names or IP addresses) as `<stem>.pem` and
    /// `<stem>.key` in `dir`; returns their paths.
    pub fn issue(&self, names: &[String], dir: &Path, stem: &str) -> Result<(PathBuf, PathBuf), CertError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut params = CertificateParams::new(names.to_vec())?;
        params.distinguished_name.push(DnType::CommonName, names.first().map_or("meridian", String::as_str));
        params.use_authority_key_identifier_extension = true;
        params.extended_key_usages =
            vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let (cert_path, key_path) = (dir.join(format!("{stem}.pem")), dir.join(format!("{stem}.key")));
        write(&key_path, &key.serialize_pem(), true)?;
        write(&cert_path, &cert.pem(), false)?;
        Ok((cert_path, key_path))
    }
}
