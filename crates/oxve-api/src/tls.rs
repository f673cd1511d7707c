//! The HTTPS certificate: a configured one (`nodes/<node>/pveproxy-ssl.pem`
//! and `.key`, upstream's names for a custom certificate) if present, else
//! the node's self-signed `pve-ssl.pem`/`pve-ssl.key`, made on first start.

use crate::error::{ApiError, ApiResult};
use crate::node::Node;
use oxve_config::{Expect, Op};
use std::sync::Arc;

/// Builds the rustls server configuration for the node.
pub fn server_config(node: &Node) -> ApiResult<Arc<rustls::ServerConfig>> {
    let (cert_pem, key_pem) = certificate(node)?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::fail(format!("bad certificate: {e}")))?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .map_err(|e| ApiError::fail(format!("bad private key: {e}")))?
        .ok_or_else(|| ApiError::fail("no private key in the key file"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ApiError::fail(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ApiError::fail(format!("certificate and key do not match: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The PEM texts of the certificate chain and key in use.
pub fn certificate(node: &Node) -> ApiResult<(String, String)> {
    let dir = format!("nodes/{}", node.name);
    let custom = (
        node.store.get(&format!("{dir}/pveproxy-ssl.pem"))?,
        node.store.get(&format!("{dir}/pveproxy-ssl.key"))?,
    );
    if let (Some(cert), Some(key)) = custom {
        return Ok((cert.text, key.text));
    }
    let cert_key = format!("{dir}/pve-ssl.pem");
    let key_key = format!("{dir}/pve-ssl.key");
    if let (Some(cert), Some(key)) = (node.store.get(&cert_key)?, node.store.get(&key_key)?) {
        return Ok((cert.text, key.text));
    }
    let (cert, key) = self_signed(&node.name)?;
    node.store.apply(Op::Put {
        key: key_key,
        text: key.clone(),
        expect: Expect::Any,
    })?;
    node.store.apply(Op::Put {
        key: cert_key,
        text: cert.clone(),
        expect: Expect::Any,
    })?;
    Ok((cert, key))
}

fn self_signed(node: &str) -> ApiResult<(String, String)> {
    let names = vec![
        node.to_string(),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let mut params = rcgen::CertificateParams::new(names)
        .map_err(|e| ApiError::fail(format!("certificate parameters: {e}")))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{node}.oxve"));
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "oxve");
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2034, 1, 1);
    let key = rcgen::KeyPair::generate().map_err(|e| ApiError::fail(e.to_string()))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| ApiError::fail(format!("self-signed certificate: {e}")))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// SHA-256 fingerprint of the certificate in use, upstream's `AA:BB:...`
/// form. Computed once: the certificate is loaded at start-up.
pub fn fingerprint(node: &Node) -> ApiResult<String> {
    if let Some(f) = node.fingerprint.get() {
        return Ok(f.clone());
    }
    let f = compute_fingerprint(node)?;
    Ok(node.fingerprint.get_or_init(|| f).clone())
}

fn compute_fingerprint(node: &Node) -> ApiResult<String> {
    use sha2::Digest;
    let (cert_pem, _) = certificate(node)?;
    let der = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .next()
        .ok_or_else(|| ApiError::fail("no certificate"))?
        .map_err(|e| ApiError::fail(e.to_string()))?;
    let digest = sha2::Sha256::digest(der.as_ref());
    Ok(digest
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":"))
}
