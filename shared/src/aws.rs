//! AWS clients, built once per process. Every client honours `AWS_ENDPOINT_URL` (and the
//! per-service `AWS_ENDPOINT_URL_<SERVICE>`) through aws-config, so the same binary runs
//! against moto server and cargo lambda locally; S3 switches to path-style addressing when
//! an endpoint is overridden, because local endpoints have no per-bucket DNS.

use aws_config::{BehaviorVersion, ConfigLoader, SdkConfig};
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};

/// The SDK's config loader with pipefy-sync's HTTP client: hyper 1 and rustls on ring, the
/// stack reqwest already brings for Pipefy (the SDK's default would add aws-lc and a second
/// TLS stack to every binary; see the workspace Cargo.toml).
pub fn config_loader() -> ConfigLoader {
    let http_client = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    aws_config::defaults(BehaviorVersion::latest()).http_client(http_client)
}

/// Loads region, credentials and endpoint overrides from the environment.
pub async fn load_sdk_config() -> SdkConfig {
    config_loader().load().await
}

pub fn s3_client(config: &SdkConfig) -> aws_sdk_s3::Client {
    let path_style =
        config.endpoint_url().is_some() || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some();
    let s3_config = aws_sdk_s3::config::Builder::from(config)
        .force_path_style(path_style)
        .build();
    aws_sdk_s3::Client::from_conf(s3_config)
}

pub fn secrets_client(config: &SdkConfig) -> aws_sdk_secretsmanager::Client {
    aws_sdk_secretsmanager::Client::new(config)
}

pub fn lambda_client(config: &SdkConfig) -> aws_sdk_lambda::Client {
    aws_sdk_lambda::Client::new(config)
}
