use serde::{Deserialize, Serialize};

use crate::Map;

/// `GET /models`: `{"object":"list","data":[…]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    /// Always `list`.
    pub object: String,
    /// The models.
    pub data: Vec<Model>,
    /// Fields this version does not model.
    #[serde(flatten)]
    pub extra: Map,
}

/// One model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// The model id clients put in `model`.
    pub id: String,
    /// Always `model`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// The owner.
    pub owned_by: String,
    /// Fields this version does not model.
    #[serde(flatten)]
    pub extra: Map,
}

impl ModelList {
    /// A list with one model.
    pub fn single(id: impl Into<String>, created: u64, owned_by: impl Into<String>) -> Self {
        Model::new(id, created, owned_by).into()
    }
}

impl From<Model> for ModelList {
    /// A list of that one model.
    fn from(model: Model) -> Self {
        ModelList { object: "list".to_owned(), data: vec![model], extra: Map::new() }
    }
}

impl Model {
    /// A model object, as `GET /models/{model}` answers it.
    pub fn new(id: impl Into<String>, created: u64, owned_by: impl Into<String>) -> Self {
        Model {
            id: id.into(),
            object: "model".to_owned(),
            created,
            owned_by: owned_by.into(),
            extra: Map::new(),
        }
    }
}
