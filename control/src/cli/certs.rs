//! `meridian certs`: a development CA and a node certificate it signs, for TLS on a node's
//! HTTPS and QUIC listeners. Production brings certificates from its own CA.

use std::path::PathBuf;

use clap::Args;
use meridian_node::transport::certs::DevCa;

#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Where the CA (`ca.pem`, `ca.key`, made when absent) and the certificates go.
    #[arg(long, default_value = ".meridian/certs")]
    pub dir: PathBuf,
    /// The certificate's file name stem: `<name>.pem` and `<name>.key`.
    #[arg(long, default_value = "node")]
    pub name: String,
    /// Host names and IP addresses the certificate is for; repeat for each.
    #[arg(long = "san", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
    pub sans: Vec<String>,
}

pub fn run(args: &CertsArgs) -> anyhow::Result<()> {
    // A file name stem in `--dir`, not a path out of it.
    if !meridian_models::spec::is_safe_name(&args.name, 128) {
        anyhow::bail!("--name {:?} must be a file name stem: letters, digits, '-', '_', '.'", args.name);
    }
    let ca = DevCa::open_or_create(&args.dir)?;
    let (cert, key) = ca.issue(&args.sans, &args.dir, &args.name)?;
    say!("CA           {}", ca.cert_path.display());
    say!("certificate  {} (for {})", cert.display(), args.sans.join(", "));
    say!("key          {}", key.display());
    say!(
        "\nIn the node's config:\n\n  [tls]\n  cert = {:?}\n  key = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    );
    say!("Clients trust the CA: curl --cacert {0}, meridian predict --ca {0}", ca.cert_path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_name_cannot_lead_out_of_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let args = |name: &str| CertsArgs {
            dir: dir.path().join("certs"),
            name: name.into(),
            sans: vec!["localhost".into()],
        };
        for bad in ["../escape", "a/b", "", ".hidden"] {
            assert!(run(&args(bad)).unwrap_err().to_string().contains("file name stem"), "{bad}");
        }
        assert!(!dir.path().join("escape.pem").exists());
        run(&args("node-1")).unwrap();
        assert!(dir.path().join("certs/node-1.pem").exists());
    }
}
