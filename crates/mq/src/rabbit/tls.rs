//! TLS for `amqps://` URLs: the server's certificate is always verified, against the platform's roots plus the CA named by `PRETEXT_AMQP_CA_FILE`.

use std::path::Path;

use lapin::tcp::OwnedTLSConfig;

use crate::error::BoxError;

/// Environment variable naming a PEM file of CA certificates to trust for
/// `amqps://` besides the platform's roots (e.g. a private CA).
pub const CA_FILE_ENV: &str = "PRETEXT_AMQP_CA_FILE";

/// The TLS settings of a new connection, read at each connection attempt so
/// that a rotated CA file is picked up on reconnect. Verification cannot be
/// turned off.
pub(crate) fn tls_config() -> Result<OwnedTLSConfig, BoxError> {
    let Some(path) = std::env::var_os(CA_FILE_ENV).filter(|p| !p.is_empty()) else {
        return Ok(OwnedTLSConfig::default());
    };
    let path = Path::new(&path);
    let pem = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read the CA file {} ({CA_FILE_ENV}): {e}",
            path.display()
        )
    })?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(format!(
            "the CA file {} ({CA_FILE_ENV}) holds no PEM certificate",
            path.display()
        )
        .into());
    }
    Ok(OwnedTLSConfig {
        identity: None,
        cert_chain: Some(pem),
    })
}
