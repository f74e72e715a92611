//! What the gossip tests share.

use meridian_gossip::{Arm, Catalog, Experiment};

/// A catalog at `epoch` with `experiments` entries (~100 bytes of JSON each): over ~800 bytes
/// it is announced and pulled rather than gossiped whole.
pub fn catalog_with_experiments(epoch: u64, experiments: usize) -> Catalog {
    let mut c = Catalog { epoch, ..Catalog::default() };
    for k in 0..experiments {
        let arms = vec![Arm { name: "a".into(), version: 1, weight_bp: 10_000 }];
        let e = Experiment {
            name: format!("e{k}"),
            model: format!("m{k}"),
            arms,
            shadow: None,
            unit_key: "user_id".into(),
            salt: format!("salt-{k}"),
        };
        c.experiments.insert(format!("m{k}"), e);
    }
    c
}
