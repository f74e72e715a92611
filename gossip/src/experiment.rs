//! A/B experiments: a model's traffic split between versions (arms) by a sticky hash of a unit
//! (e.g. `user_id`), the same at every node in every region with no shared state, plus an
//! optional shadow version that sees a copy of each request and never answers.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Assignment granularity: weights are in basis points of these buckets.
pub const BUCKETS: u32 = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Arm {
    pub name: String,
    pub version: u32,
    /// Share of traffic in basis points; the arms of an experiment sum to 10,000.
    pub weight_bp: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    pub name: String,
    pub model: String,
    pub arms: Vec<Arm>,
    /// A version that gets a copy of every request; its answers are recorded, never returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<u32>,
    /// The request field or header whose value is hashed (e.g. `user_id`).
    pub unit_key: String,
    /// Changing the salt reshuffles units between arms.
    pub salt: String,
}

/// The bucket of `unit` under `salt`: the first 8 bytes of sha256(salt ‖ 0 ‖ unit), mod 10,000.
/// A cryptographic hash keeps buckets uniform whatever the unit ids look like, and stable
/// across platforms and releases.
pub fn bucket(salt: &str, unit: &str) -> u32 {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update([0]);
    h.update(unit.as_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % u64::from(BUCKETS)) as u32
}

impl Experiment {
    /// The arm owning `bucket` (arms take consecutive bucket ranges in their listed order).
    pub fn arm_for_bucket(&self, bucket: u32) -> Option<&Arm> {
        let mut upper = 0;
        self.arms.iter().find(|arm| {
            upper += arm.weight_bp;
            bucket < upper
        })
    }

    /// The arm of `unit`.
    pub fn assign(&self, unit: &str) -> Option<&Arm> {
        self.arm_for_bucket(bucket(&self.salt, unit))
    }

    /// Versions this experiment needs loaded (arms and shadow), deduplicated.
    pub fn versions(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.arms.iter().map(|a| a.version).chain(self.shadow).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Every problem with the definition itself.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.name.is_empty() || self.unit_key.is_empty() {
            p.push("an experiment needs a name and a unit_key".to_string());
        }
        // Names travel in URLs, metric labels and every node's catalog.
        // Not starting with '.': `.` and `..` cannot be URL path segments (clients resolve them).
        if !self.name.is_empty() && !meridian_models::spec::is_safe_name(&self.name, 128) {
            p.push(
                "the experiment name must be at most 128 letters, digits, '-', '_' or '.', not starting with '.'"
                    .to_string(),
            );
        }
        if self.unit_key.len() > 128 || self.arms.iter().any(|a| a.name.len() > 128) {
            p.push("the unit_key and arm names must be at most 128 characters".to_string());
        }
        if self.arms.is_empty() {
            p.push("an experiment needs at least one arm".to_string());
        }
        let total: u64 = self.arms.iter().map(|a| u64::from(a.weight_bp)).sum();
        if total != u64::from(BUCKETS) {
            p.push(format!("arm weights sum to {total} basis points, not {BUCKETS}"));
        }
        let mut names: Vec<&str> = self.arms.iter().map(|a| a.name.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) || names.iter().any(|n| n.is_empty() || *n == "shadow") {
            p.push("arm names must be unique, non-empty and not \"shadow\"".to_string());
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exp(weights: &[u32]) -> Experiment {
        Experiment {
            name: "e".into(),
            model: "m".into(),
            arms: weights
                .iter()
                .enumerate()
                .map(|(i, w)| Arm { name: format!("a{i}"), version: i as u32 + 1, weight_bp: *w })
                .collect(),
            shadow: None,
            unit_key: "user_id".into(),
            salt: "s1".into(),
        }
    }

    #[test]
    fn assignment_is_sticky_and_matches_the_weights_over_100k_units() {
        let e = exp(&[2_000, 5_000, 3_000]);
        let mut counts = [0u32; 3];
        for u in 0..100_000 {
            let unit = format!("user-{u}");
            let arm = e.assign(&unit).unwrap();
            assert_eq!(e.assign(&unit).unwrap(), arm, "sticky");
            counts[(arm.version - 1) as usize] += 1;
        }
        // Binomial: sd = sqrt(n p (1-p)) <= 158 for n = 100k; allow 5 sd.
        for (count, expected) in counts.iter().zip([20_000u32, 50_000, 30_000]) {
            assert!(count.abs_diff(expected) < 800, "{counts:?}");
        }
    }

    #[test]
    fn the_salt_reshuffles_and_buckets_are_stable() {
        // Pinned values, computed independently with Python's hashlib: a change of hash would
        // silently move every user to another arm, and other clients must agree.
        assert_eq!(bucket("s1", "user-1"), 3_554);
        assert_ne!(
            (0..20).map(|u| bucket("a", &u.to_string())).collect::<Vec<_>>(),
            (0..20).map(|u| bucket("b", &u.to_string())).collect::<Vec<_>>()
        );
        assert_eq!(bucket("", ""), 3_192);
    }

    #[test]
    fn bad_definitions_are_reported() {
        assert!(exp(&[5_000, 4_000]).problems().iter().any(|p| p.contains("sum to 9000")));
        let mut e = exp(&[5_000, 5_000]);
        e.arms[1].name = "a0".into();
        assert!(!e.problems().is_empty());
        assert!(exp(&[10_000]).problems().is_empty());
        for name in ["../x y/é", &"n".repeat(129), ".", ".."] {
            let mut e = exp(&[10_000]);
            e.name = name.to_string();
            assert!(e.problems().iter().any(|p| p.contains("experiment name")), "{name}");
        }
    }
}
