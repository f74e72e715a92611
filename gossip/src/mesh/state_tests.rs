#![allow(clippy::unwrap_used)]
use super::*;
use crate::mesh::sign::ControlKey;
use crate::{Catalog, LoadedModel};

fn control() -> ControlKey {
    ControlKey::from_seed(&[3; 32])
}

fn replica() -> Replica {
    Replica::new(Verifier::new(vec![control().public()]))
}

fn signed(epoch: u64) -> Vec<u8> {
    serde_json::to_vec(&control().sign_catalog(Catalog { epoch, ..Catalog::default() })).unwrap()
}

fn info(node: &str, generation: u32, version: u64) -> InfoRecord {
    let models = vec![LoadedModel {
        name: "ranker".into(),
        version: 2,
        runtime: "wgpu".into(),
        runtime_reason: String::new(),
        live: true,
        warm: true,
    }];
    InfoRecord {
        generation,
        info: NodeInfo { id: node.into(), version, models, gpu: true, ..NodeInfo::default() },
    }
}

#[test]
fn node_info_survives_postcard_so_no_field_skips_serializing() {
    let item = Item::Info(info("a", 1, 2));
    assert_eq!(decode_item(&item_bytes(&item)).unwrap(), item);
}

#[test]
fn catalogs_only_move_forward() {
    let mut r = replica();
    assert_eq!(r.offer_catalog(signed(3), false), Some(3));
    assert_eq!(r.offer_catalog(signed(2), false), None);
    assert_eq!(r.offer_catalog(signed(3), false), None);
    assert_eq!(r.epoch(), 3);
    assert_eq!((r.counters.catalogs_stale, r.counters.catalog_duplicates), (1, 1));
    let forged = ControlKey::from_seed(&[4; 32]).sign_catalog(Catalog { epoch: 9, ..Catalog::default() });
    assert_eq!(r.offer_catalog(serde_json::to_vec(&forged).unwrap(), false), None);
    assert_eq!(r.offer_catalog(b"{not json".to_vec(), false), None);
    assert_eq!((r.epoch(), r.counters.catalogs_forged, r.counters.catalogs_malformed), (3, 1, 1));
}

#[test]
fn an_announced_newer_catalog_is_wanted_from_its_sender_and_not_forwarded_yet() {
    let mut r = replica();
    let peer = MeshIdentity::new("p", ([10, 0, 0, 9], 1).into(), "r", 1).unwrap();
    assert_eq!(r.receive(Item::CatalogAnnounce { epoch: 4 }, Some(&peer)), None);
    assert!(matches!(r.effects.as_slice(), [Effect::WantCatalog { epoch: 4, .. }]));
    r.offer_catalog(signed(4), true);
    // Once held, our own announcement of it is kept for dissemination.
    assert_eq!(r.receive(Item::CatalogAnnounce { epoch: 4 }, None), Some(ItemKey::Catalog(4)));
    let held = r.catalog().unwrap().bytes.clone();
    assert_eq!(r.receive(Item::Catalog(held), None), Some(ItemKey::Catalog(4)));
}

#[test]
fn revocations_accumulate_and_anti_entropy_finds_the_difference() {
    let (mut a, mut b) = (replica(), replica());
    let batch = |serial, keys: &[&str]| {
        serde_json::to_vec(&control().sign_revocation(serial, keys.iter().map(|k| k.to_string()).collect()))
            .unwrap()
    };
    assert_eq!(a.offer_revocation(batch(1, &["k1", "k2"])), Some(1));
    assert_eq!(b.offer_revocation(batch(2, &["k3"])), Some(2));
    assert_eq!(a.offer_revocation(batch(1, &["k1", "k2"])), None);

    let want = b.wants(&a.summary(0, false), 0).unwrap();
    assert!(want.revocations);
    b.absorb(a.serve(&want), &[]);
    assert!(!a.ahead_of(&a.summary(0, false)), "a node is never ahead of itself");
    let want = a.wants(&b.summary(0, false), 0).unwrap();
    a.absorb(b.serve(&want), &[]);
    assert_eq!(a.revoked(), b.revoked());
    assert_eq!(a.revoked().len(), 3);
    assert_eq!(a.summary(0, false), b.summary(0, false));
}

#[test]
fn the_newest_info_wins_and_buckets_pull_only_what_differs() {
    let (mut a, mut b) = (replica(), replica());
    for n in 0..40 {
        let record = info(&format!("n{n}"), 1, 1);
        a.offer_info(record.clone(), false);
        b.offer_info(record, false);
    }
    assert!(!a.offer_info(info("n1", 1, 1), false), "same version is not news");
    assert!(a.offer_info(info("n1", 1, 5), false));
    assert!(!a.offer_info(info("n1", 1, 4), false), "older version refused");
    assert!(a.offer_info(info("n1", 2, 1), false), "a later generation wins over any version");

    let want = b.wants(&a.summary(40, false), 40).unwrap();
    assert_eq!(want.info_buckets.count_ones(), 1);
    let resp = a.serve(&want);
    assert!(resp.infos.len() < 40 / 4, "pulled {} infos", resp.infos.len());
    b.absorb(resp, &[]);
    assert_eq!(b.info("n1").unwrap().generation, 2);
    assert_eq!(a.summary(40, false), b.summary(40, false));
    assert!(b.wants(&a.summary(40, false), 40).is_none());
}
