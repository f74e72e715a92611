//! The result cache: answers of one-row predictions keyed by model, version and the exact
//! final input vector (after features are looked up and transformed). A feature write changes
//! the vector and a deploy changes the version, so a cached answer is never an old result.
//! Off unless `result_cache_capacity` is set (like Triton's response cache): most real-time
//! inputs are unique.

use std::time::Duration;

use meridian_models::interpret::Prediction;
use moka::sync::Cache;

type Key = (String, u32, Box<[u32]>);

pub struct ResultCache {
    cache: Option<Cache<Key, Prediction>>,
}

impl ResultCache {
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        let cache = (capacity > 0).then(|| Cache::builder().max_capacity(capacity).time_to_live(ttl).build());
        Self { cache }
    }

    fn key(model: &str, version: u32, input: &[f32]) -> Key {
        (model.to_string(), version, input.iter().map(|x| x.to_bits()).collect())
    }

    pub fn get(&self, model: &str, version: u32, input: &[f32]) -> Option<Prediction> {
        self.cache.as_ref()?.get(&Self::key(model, version, input))
    }

    pub fn insert(&self, model: &str, version: u32, input: &[f32], prediction: Prediction) {
        if let Some(cache) = &self.cache {
            cache.insert(Self::key(model, version, input), prediction);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_by_version_and_exact_input() {
        let cache = ResultCache::new(10, Duration::from_secs(60));
        let p = Prediction { prediction: 0.5, confidence: Some(0.5), class: Some(1) };
        cache.insert("m", 1, &[1.0, 2.0], p);
        assert_eq!(cache.get("m", 1, &[1.0, 2.0]), Some(p));
        assert_eq!(cache.get("m", 2, &[1.0, 2.0]), None, "another version never reuses an answer");
        assert_eq!(cache.get("m", 1, &[1.0, 2.000_001]), None, "another input never reuses an answer");
        assert_eq!(ResultCache::new(0, Duration::from_secs(60)).get("m", 1, &[1.0, 2.0]), None);
    }
}
