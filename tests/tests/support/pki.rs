//! Throw-away certificate authorities and node certificates for the Raft
//! TLS tests (rcgen), written to files as a deployment would have them.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use dref_backends::raft::TlsConfig;
use dref_tests::scratch::ScratchDir;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// The DNS name every test node certificate carries beside 127.0.0.1.
pub const NODE_NAME: &str = "dref-node";

/// A certificate authority.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// Its certificate, PEM.
    pub pem: String,
}

/// A certificate and its key, PEM.
#[derive(Clone)]
pub struct Identity {
    /// The certificate.
    pub cert: String,
    /// Its private key.
    pub key: String,
}

impl Ca {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("a CA key");
        let cert = params.self_signed(&key).expect("a CA certificate");
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A node certificate for 127.0.0.1 and [`NODE_NAME`], valid for
    /// serving and for connecting.
    pub fn issue(&self, node: &str) -> Identity {
        self.issue_with(node, |_| {})
    }

    /// A node certificate that expired in 2021.
    pub fn issue_expired(&self, node: &str) -> Identity {
        self.issue_with(node, |params| {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        })
    }

    fn issue_with(&self, node: &str, tune: impl FnOnce(&mut CertificateParams)) -> Identity {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, node);
        params.distinguished_name = dn;
        params.subject_alt_names = vec![
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            SanType::DnsName(NODE_NAME.try_into().expect("a DNS name")),
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        tune(&mut params);
        let key = KeyPair::generate().expect("a node key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("a node certificate");
        Identity {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// The files of one node's TLS settings.
#[derive(Clone)]
pub struct Files {
    /// The certificate file.
    pub cert: PathBuf,
    /// The key file.
    pub key: PathBuf,
    /// The CA file.
    pub ca: PathBuf,
}

impl Files {
    /// Writes `identity` and `ca_pem` (one or more CA certificates) under
    /// `dir/name`, replacing what was there the way a deployment tool
    /// would: each file written aside, then renamed over the old one.
    pub fn write(dir: &Path, name: &str, identity: &Identity, ca_pem: &str) -> Files {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).expect("a certificate directory");
        let files = Files {
            cert: dir.join("node.pem"),
            key: dir.join("node.key"),
            ca: dir.join("ca.pem"),
        };
        for (path, text) in [
            (&files.cert, identity.cert.as_str()),
            (&files.key, identity.key.as_str()),
            (&files.ca, ca_pem),
        ] {
            let aside = path.with_extension("new");
            std::fs::write(&aside, text).expect("write a certificate file");
            std::fs::rename(&aside, path).expect("replace a certificate file");
        }
        files
    }

    /// TLS settings reading these files, re-read every 100 ms.
    pub fn config(&self) -> TlsConfig {
        TlsConfig::from_files(&self.cert, &self.key, &self.ca)
            .reload_interval(std::time::Duration::from_millis(100))
    }
}

/// A scratch directory for one test's certificates (kept if the test
/// fails).
pub fn scratch(test: &str) -> ScratchDir {
    ScratchDir::new(&format!("tls-{test}"))
}
