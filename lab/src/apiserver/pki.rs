//! The certificates of one throwaway cluster: a CA, the API server's serving certificate (SAN
//! 127.0.0.1 and localhost, so rustls and kubectl both accept it) and the service-account
//! signing key. ECDSA P-256 throughout: quick to generate, and kube-apiserver v1.20 accepts it
//! for serving and for ES256 service-account tokens alike.

use std::{
    fs,
    path::{Path, PathBuf},
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use super::ApiServerError;

/// Where the files went; every path is inside the state directory's `pki/`.
#[derive(Clone, Debug)]
pub(super) struct Pki {
    pub ca_crt: PathBuf,
    pub server_crt: PathBuf,
    pub server_key: PathBuf,
    pub sa_key: PathBuf,
    /// The public half, which the API server verifies tokens with.
    pub sa_pub: PathBuf,
}

impl Pki {
    pub fn write(dir: &Path) -> Result<Pki, ApiServerError> {
        let cert = |what: &'static str| move |source| ApiServerError::Certificate { what, source };
        fs::create_dir_all(dir).map_err(|source| ApiServerError::io(dir, source))?;

        let ca_key = KeyPair::generate().map_err(cert("CA key"))?;
        let mut ca = CertificateParams::default();
        ca.distinguished_name = common_name("palisade-test-ca");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).map_err(cert("CA certificate"))?;
        let issuer = Issuer::new(ca, &ca_key);

        let server_key = KeyPair::generate().map_err(cert("serving key"))?;
        let mut server =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .map_err(cert("serving certificate names"))?;
        server.distinguished_name = common_name("kube-apiserver");
        server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server
            .signed_by(&server_key, &issuer)
            .map_err(cert("serving certificate"))?;

        let sa_key = KeyPair::generate().map_err(cert("service-account key"))?;

        let pki = Pki {
            ca_crt: dir.join("ca.crt"),
            server_crt: dir.join("apiserver.crt"),
            server_key: dir.join("apiserver.key"),
            sa_key: dir.join("sa.key"),
            sa_pub: dir.join("sa.pub"),
        };
        for (path, text) in [
            (&pki.ca_crt, ca_cert.pem()),
            (&pki.server_crt, server_cert.pem()),
            (&pki.server_key, server_key.serialize_pem()),
            (&pki.sa_key, sa_key.serialize_pem()),
            (&pki.sa_pub, sa_key.public_key_pem()),
        ] {
            fs::write(path, text).map_err(|source| ApiServerError::io(path, source))?;
        }
        Ok(pki)
    }
}

fn common_name(cn: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, cn);
    name
}
