//! Certificates for TLS tests, made with the `openssl` command line tool: a CA of the test's
//! own and certificates it signs (servers on 127.0.0.1, clients for mutual TLS).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A certificate authority in a temp dir; dropped with it.
pub struct Ca {
    dir: tempfile::TempDir,
    name: String,
}

/// A certificate and its key, as PEM files.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("openssl not found ({e}): apt-get install -y openssl"));
    assert!(
        out.status.success(),
        "openssl {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Ca {
    /// A new CA named `name` (its subject CN).
    pub fn new(name: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        openssl(
            dir.path(),
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-sha256",
                "-days",
                "30",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-subj",
                &format!("/CN={name}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        Ca { dir, name: name.to_string() }
    }

    /// The CA certificate (PEM).
    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// A server certificate for 127.0.0.1 and localhost. It may act as a client too: Redis
    /// Cluster nodes present it to each other on the cluster bus.
    pub fn server(&self, name: &str) -> CertFiles {
        self.issue(name, "serverAuth,clientAuth", Some("IP:127.0.0.1,DNS:localhost"))
    }

    /// A server certificate for host name `dns` (an Ingress host).
    pub fn server_for(&self, name: &str, dns: &str) -> CertFiles {
        self.issue(name, "serverAuth", Some(&format!("DNS:{dns}")))
    }

    /// A client certificate (for mutual TLS).
    pub fn client(&self, name: &str) -> CertFiles {
        self.issue(name, "clientAuth", None)
    }

    fn issue(&self, name: &str, usage: &str, san: Option<&str>) -> CertFiles {
        let d = self.dir.path();
        let (key, csr, crt, ext) =
            (format!("{name}.key"), format!("{name}.csr"), format!("{name}.crt"), format!("{name}.ext"));
        openssl(
            d,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-sha256",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={name}"),
            ],
        );
        let mut text = format!(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage={usage}\n"
        );
        if let Some(san) = san {
            text.push_str(&format!("subjectAltName={san}\n"));
        }
        std::fs::write(d.join(&ext), text).unwrap();
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-sha256",
                "-days",
                "30",
                "-extfile",
                &ext,
                "-out",
                &crt,
            ],
        );
        CertFiles { cert: d.join(crt), key: d.join(key) }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}
