use resflow::cli::NetType;
use resflow::models::NetConfig;
use tch::{nn::VarStore, Device, Kind, Tensor};
fn main() {
    let cfg = NetConfig {
        net_type: NetType::Resnet,
        width: 4,
        num_classes: 10,
    };
    tch::manual_seed(0);
    let x = Tensor::randn([200, 3, 32, 32], (Kind::Float, Device::Cpu));
    for s in 0..4 {
        tch::manual_seed(s);
        let vs = VarStore::new(Device::Cpu);
        let net = cfg.build(&vs.root()).unwrap();
        let y = tch::no_grad(|| net.forward_t(&x, false));
        let p = y.argmax(1, false).bincount::<Tensor>(None, 10);
        println!(
            "tch seed {s}: logit std {:.4} preds {:?}",
            y.std(true).double_value(&[]),
            Vec::<i64>::try_from(&p).unwrap()
        );
        let vs = VarStore::new(Device::Cpu);
        let net = cfg.build_seeded(&vs, s as u64).unwrap();
        let y = tch::no_grad(|| net.forward_t(&x, false));
        let p = y.argmax(1, false).bincount::<Tensor>(None, 10);
        println!(
            "ours seed {s}: logit std {:.4} preds {:?}",
            y.std(true).double_value(&[]),
            Vec::<i64>::try_from(&p).unwrap()
        );
    }
    let vs = VarStore::new(Device::Cpu);
    let _ = cfg.build(&vs.root()).unwrap();
    let mut v: Vec<_> = vs.variables().into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    for (n, t) in v.iter().take(12) {
        println!(
            "{n} {:?} std {:.4}",
            t.size(),
            t.std(true).double_value(&[])
        );
    }
}
