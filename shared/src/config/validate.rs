//! Loading and validating destination files. OWNER: lead.

use std::path::Path;

use super::Destination;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {message}")]
    Unreadable { file: String, message: String },
    #[error("{file}: {path}: {message}")]
    Invalid {
        file: String,
        path: String,
        message: String,
    },
}

pub fn parse_destination(file: &str, text: &str) -> Result<Destination, ConfigError> {
    let de = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| ConfigError::Invalid {
        file: file.to_string(),
        path: e.path().to_string(),
        message: e.inner().to_string(),
    })
}

pub fn load_destination_file(path: &Path) -> Result<Destination, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Unreadable {
        file: file.clone(),
        message: e.to_string(),
    })?;
    parse_destination(&file, &text)
}
