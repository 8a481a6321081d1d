//! Seeded initialisation: independent of libtorch's global generator, covering every randomly
//! initialised variable, with the distributions of tch's own initialisation.
use resflow::models::init::seeded_init;
use resflow::models::NetConfig;
use resflow::models::NetType;
use tch::{nn::VarStore, Device};

fn config(net_type: NetType) -> NetConfig {
    NetConfig {
        net_type,
        width: 4,
        num_classes: 10,
    }
}

fn build(net_type: NetType, global_seed: i64, seed: Option<u64>) -> VarStore {
    tch::manual_seed(global_seed);
    let vs = VarStore::new(Device::Cpu);
    match seed {
        Some(seed) => drop(config(net_type).build_seeded(&vs, seed).unwrap()),
        None => drop(config(net_type).build(&vs.root()).unwrap()),
    }
    vs
}

#[test]
fn the_same_seed_gives_the_same_network_whatever_the_global_generator_holds() {
    for net_type in [NetType::Resnet, NetType::Densenet] {
        let a = build(net_type, 1, Some(5)).variables();
        let b = build(net_type, 2, Some(5)).variables();
        let c = build(net_type, 1, Some(6)).variables();
        assert_eq!(a.len(), b.len());
        let mut random = 0;
        for (name, t) in &a {
            assert!(
                t.equal(&b[name]),
                "{net_type:?} {name} depends on the global seed"
            );
            if !t.equal(&c[name]) {
                random += 1;
            }
        }
        // Every conv and linear weight plus the linear bias is drawn from the seed.
        let expected = a
            .iter()
            .filter(|(n, t)| n.ends_with(".weight") && t.dim() >= 2)
            .count()
            + 1;
        assert_eq!(random, expected, "{net_type:?}");
    }
}

#[test]
fn the_distributions_match_tch_initialisation() {
    for net_type in [NetType::Resnet, NetType::Densenet] {
        let seeded = build(net_type, 1, Some(9)).variables();
        let native = build(net_type, 3, None).variables();
        for (name, want) in &native {
            let got = &seeded[name];
            assert_eq!(got.size(), want.size(), "{name}");
            let (g_max, w_max) = (
                got.abs().max().double_value(&[]),
                want.abs().max().double_value(&[]),
            );
            if want.numel() < 2 || want.std(true).double_value(&[]) == 0.0 {
                // Constants (BatchNorm) are untouched.
                assert!(got.equal(want), "{net_type:?} {name} changed a constant");
                continue;
            }
            // Uniform on (-b, b): the largest draw is close to b, the std is b / sqrt(3).
            let bound = w_max.max(g_max);
            assert!(g_max <= bound && w_max <= bound);
            let (g_std, w_std) = (
                got.std(true).double_value(&[]),
                want.std(true).double_value(&[]),
            );
            if want.numel() >= 2000 {
                assert!(
                    (g_max / w_max - 1.0).abs() < 0.01,
                    "{name}: max {g_max} vs {w_max}"
                );
                assert!(
                    (g_std / w_std - 1.0).abs() < 0.06,
                    "{name}: std {g_std} vs {w_std}"
                );
                assert!((w_std * 3f64.sqrt() / w_max - 1.0).abs() < 0.06, "{name}");
            }
        }
    }
}

#[test]
fn seeded_init_leaves_batch_norm_buffers_alone() {
    let vs = build(NetType::Resnet, 1, None);
    let before = vs.variables();
    seeded_init(&vs, 4).unwrap();
    let after = vs.variables();
    for (name, t) in &before {
        if name.contains("bn") || name.contains("shortcut.1") {
            assert!(t.equal(&after[name]), "{name}");
        }
    }
}

/// Issue 14, defect 11: an out-of-range layer names the valid range (`0 to 4`, not `0..5`); the
/// linear head maps the last layer's mean-pooled features to the logits.
#[test]
fn layer_errors_name_the_valid_range_and_the_head_gives_the_logits() {
    for (net_type, last) in [(NetType::Resnet, 4), (NetType::Densenet, 3)] {
        let vs = VarStore::new(Device::Cpu);
        let net = config(net_type).build_seeded(&vs, 1).unwrap();
        let x = tch::Tensor::randn([2, 3, 32, 32], (tch::Kind::Float, Device::Cpu));
        let e = net.intermediate_forward(&x, 9).unwrap_err();
        assert!(
            matches!(&e, resflow::Error::BadOption { option, .. } if option == "layer"),
            "{e}"
        );
        let e = e.to_string();
        assert!(
            e.contains(&format!("feature layers 0 to {last}, layer 9")),
            "{e}"
        );
        let phi = resflow::models::mean_pool(&net.intermediate_forward(&x, last).unwrap());
        let (w, b) = net.linear_head().unwrap();
        let logits = phi.matmul(&w.tr()) + b;
        let direct = net.forward_t(&x, false);
        let diff = (logits - &direct).abs().max().double_value(&[]);
        // Float32 rounding of the pooling order, relative to the logits' size.
        let scale = 1.0 + direct.abs().max().double_value(&[]);
        assert!(diff < 1e-5 * scale, "{net_type:?}: {diff} at scale {scale}");
    }
}
