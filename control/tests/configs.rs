//! Every example config in `deploy/` parses and validates; bad configs report every problem.
#![allow(clippy::unwrap_used)]

use meridian_control::ControlConfig;
use meridian_node::NodeConfig;

fn deploy_file(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn example_configs_in_deploy_parse_and_validate() {
    let control = ControlConfig::from_toml(&deploy_file("control.toml")).unwrap();
    control.validate().unwrap();
    let node = NodeConfig::from_toml(&deploy_file("node.toml")).unwrap();
    node.validate().unwrap();
    assert_eq!(node.region, "eu-west");
    assert_eq!(node.control_url.as_deref(), Some("https://control.internal:7070"));
    assert!(node.mesh.enabled() && node.mesh.seeds.len() == 2, "{:?}", node.mesh);
    let tiles = NodeConfig::from_toml("[gpu]\nmatmul_tile = \"128\"").unwrap();
    assert_eq!(tiles.gpu.matmul_tile, meridian_models::runtime::gpu::MatmulTile::T128);
    let err = NodeConfig::from_toml("[gpu]\nmatmul_tile = \"96\"").unwrap_err();
    assert!(err.contains("matmul_tile") || err.contains("96"), "{err}");
    // Every deploy/*.toml is one of the two kinds.
    for entry in
        std::fs::read_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")).unwrap()
    {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            let ok = ControlConfig::from_toml(&text).is_ok() || NodeConfig::from_toml(&text).is_ok();
            assert!(ok, "{} is neither a control nor a node config", path.display());
        }
    }
}

#[test]
fn unknown_keys_are_refused_and_validate_reports_every_problem() {
    let err = NodeConfig::from_toml("queue_capacty = 3").unwrap_err();
    assert!(err.contains("queue_capacty"), "{err}");
    let config = NodeConfig::from_toml("id = \"\"\nqueue_capacity = 0\ncontrol_url = \"ftp://x\"").unwrap();
    let problems = config.validate().unwrap_err();
    // The three above, and no TLS certificate without plaintext_http asked for.
    assert_eq!(problems.len(), 4, "{problems:?}");
    assert!(problems.iter().any(|p| p.contains("tls.plaintext_http")), "{problems:?}");
    let control = ControlConfig::from_toml("max_artifact_bytes = 1\nnode_down_after_secs = 0").unwrap();
    // The two above, and control too needs TLS unless plaintext is asked for.
    let problems = control.validate().unwrap_err();
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(problems.iter().any(|p| p.contains("tls.plaintext_http")), "{problems:?}");
}

#[test]
fn example_feature_views_parse_and_validate() {
    let views = meridian_control::cli::features::parse_views(&deploy_file("features/views.toml")).unwrap();
    assert_eq!(views.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(), ["users", "merchants"]);
    let err = meridian_control::cli::features::parse_views(
        "[[views]]\nname = \"x\"\nentity = \"id\"\nttl_secs = 0\n[views.features]\na = \"float\"\n",
    );
    assert!(err.unwrap_err().to_string().contains("ttl_secs must be positive"));
}

#[test]
fn example_rollout_plan_parses() {
    let plan: meridian_control::cli::rollout::Plan =
        toml::from_str(&deploy_file("rollouts/careful.toml")).unwrap();
    assert_eq!(plan.steps, vec![1, 5, 25, 50, 100]);
    assert_eq!(plan.hold, std::time::Duration::from_secs(300));
    assert_eq!(plan.max_p99_ratio, Some(1.5));
}
