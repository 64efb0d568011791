//! The Train page's runner in the browser (wasm, CPU backend): a quota error while saving
//! stops the run with a message and keeps the last checkpoint, which then resumes to the
//! end; a diverging run stops at the first non-finite loss; and the held-out scores equal
//! `patchwork eval`'s on the bundled model and subset (as `eval_parity.rs` checks natively).
#![cfg(target_arch = "wasm32")]

use std::rc::Rc;

use leptos::prelude::*;
use patchwork_app::engine::BackendKind;
use patchwork_app::store;
use patchwork_app::train::{
    evaluate, fashion_norm, run, split_from_gz, Command, Preset, RunSignals, Status, TrainData, TrainForm,
};
use patchwork_compute::augment::Image;
use patchwork_compute::rng::Rng;
use patchwork_compute::train::{BackboneKind, ImageSet, Method};
use patchwork_compute::{Cpu, TensorFile};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

fn random_set(n: usize, seed: u64) -> ImageSet {
    let mut rng = Rng::new(seed);
    let images = (0..n).map(|_| Image::new(28, 28, 1, (0..28 * 28).map(|_| rng.uniform()).collect())).collect();
    ImageSet { images, labels: Some((0..n as u32).map(|i| i % 10).collect()), norm: fashion_norm(), crops: None }
}

fn ten() -> Vec<String> {
    (0..10).map(|c| format!("class {c}")).collect()
}

fn signals() -> RunSignals {
    RunSignals::new()
}

fn micro_form(method: Method) -> TrainForm {
    TrainForm {
        method,
        preset: Preset::Micro,
        steps: 30,
        batch: 8,
        eval_every: 1000,
        checkpoint_every: 10,
        eval_train: 64,
        eval_test: 32,
        ..TrainForm::default()
    }
}

#[wasm_bindgen_test]
async fn a_quota_error_stops_training_and_the_last_checkpoint_resumes() {
    let owner = Owner::new();
    owner.set();
    let data = Rc::new(TrainData { train: random_set(64, 1), test: random_set(32, 2), classes: ten() });
    let (sig, command) = (signals(), RwSignal::new(Command::Run));
    store::fail_save_with_quota_after(Some(1));
    run(BackendKind::Cpu, micro_form(Method::Dino), None, data.clone(), command, sig).await;
    let status = sig.status.get_untracked();
    let Status::Failed(msg) = &status else { panic!("expected a failure, got {status:?}") };
    assert!(msg.contains("quota") && msg.contains("checkpoint at step 10 is kept"), "{msg}");
    assert_eq!(sig.progress.get_untracked().step, 20, "it stopped at the second checkpoint");
    let id = sig.run_id.get_untracked().unwrap();
    let saved = store::load(&id).await.unwrap().expect("the first checkpoint is stored");
    assert_eq!(saved.step, 10);

    // Resuming the kept checkpoint continues with its curves (10 loss points) to the end.
    let sig2 = signals();
    run(BackendKind::Cpu, micro_form(Method::Dino), Some(saved), data, command, sig2).await;
    assert!(matches!(sig2.status.get_untracked(), Status::Finished(_)), "{:?}", sig2.status.get_untracked());
    let loss = sig2.curves.get_untracked().loss;
    assert_eq!(loss.len(), 30);
    assert_eq!(loss.iter().map(|p| p.0 as usize).collect::<Vec<_>>(), (1..=30).collect::<Vec<_>>());
    assert_eq!(store::load(&id).await.unwrap().unwrap().step, 30);
    store::delete(&id).await.unwrap();
}

#[wasm_bindgen_test]
async fn a_diverging_run_stops_at_the_first_non_finite_loss() {
    let owner = Owner::new();
    owner.set();
    let data = Rc::new(TrainData { train: random_set(64, 3), test: random_set(32, 4), classes: ten() });
    let sig = signals();
    let form = TrainForm { lr: Some(1e30), ..micro_form(Method::Mae) };
    run(BackendKind::Cpu, form, None, data, RwSignal::new(Command::Run), sig).await;
    let status = sig.status.get_untracked();
    let Status::Failed(msg) = &status else { panic!("expected a failure, got {status:?}") };
    assert!(msg.contains("the loss is") && msg.contains("no checkpoint was saved yet"), "{msg}");
    let step = sig.progress.get_untracked().step;
    assert!(step < 10, "it went on to step {step}");
    if let Some(id) = sig.run_id.get_untracked() {
        store::delete(&id).await.unwrap();
    }
}

#[wasm_bindgen_test]
async fn held_out_scores_match_patchwork_eval_in_the_browser() {
    const MODEL: &[u8] = include_bytes!("../../assets/models/dino-fashion-mnist.safetensors");
    let fm = |f: &str| -> &'static [u8] {
        match f {
            "train-images" => include_bytes!("../../assets/fashion-mnist/train-images-idx3-ubyte.gz"),
            "train-labels" => include_bytes!("../../assets/fashion-mnist/train-labels-idx1-ubyte.gz"),
            "t10k-images" => include_bytes!("../../assets/fashion-mnist/t10k-images-idx3-ubyte.gz"),
            _ => include_bytes!("../../assets/fashion-mnist/t10k-labels-idx1-ubyte.gz"),
        }
    };
    let data = TrainData {
        train: split_from_gz(fm("train-images"), fm("train-labels"), "train").unwrap(),
        test: split_from_gz(fm("t10k-images"), fm("t10k-labels"), "t10k").unwrap(),
        classes: ten(),
    };
    let (knn, linear) = evaluate(&Cpu, TensorFile::from_bytes(MODEL).unwrap(), &data, 2000, 1000).await.unwrap();
    // `patchwork eval --model assets/models/dino-fashion-mnist.safetensors --data assets/fashion-mnist
    //  --knn --linear --backend cpu`: 64.8 % and 66.7 %.
    assert!((knn - 64.8).abs() <= 0.5, "kNN {knn}");
    assert!((linear - 66.7).abs() <= 0.5, "linear {linear}");
}

#[wasm_bindgen_test]
async fn an_mae_run_refreshes_its_reconstructions_at_every_evaluation() {
    let owner = Owner::new();
    owner.set();
    let data = Rc::new(TrainData { train: random_set(64, 5), test: random_set(32, 6), classes: ten() });
    let sig = signals();
    let form = TrainForm { steps: 20, eval_every: 10, checkpoint_every: 100, ..micro_form(Method::Mae) };
    run(BackendKind::Cpu, form, None, data, RwSignal::new(Command::Run), sig).await;
    assert!(matches!(sig.status.get_untracked(), Status::Finished(_)), "{:?}", sig.status.get_untracked());
    let (step, picture) = sig.recon.get_untracked().expect("reconstructions");
    assert_eq!(step, 20);
    // Four rows of four panels, each cell at least the 28-pixel input.
    assert!(picture.width >= 4 * 28 && picture.height >= 4 * 28, "{}×{}", picture.width, picture.height);
    assert_eq!(sig.curves.get_untracked().knn.len(), 2);
    if let Some(id) = sig.run_id.get_untracked() {
        store::delete(&id).await.unwrap();
    }
}

async fn supervised_run_scores_its_classifier(backbone: BackboneKind) {
    let owner = Owner::new();
    owner.set();
    let data = Rc::new(TrainData { train: random_set(64, 7), test: random_set(32, 8), classes: ten() });
    let sig = signals();
    let form =
        TrainForm { steps: 20, eval_every: 10, checkpoint_every: 100, backbone, ..micro_form(Method::Supervised) };
    run(BackendKind::Cpu, form, None, data, RwSignal::new(Command::Run), sig).await;
    assert!(matches!(sig.status.get_untracked(), Status::Finished(_)), "{:?}", sig.status.get_untracked());
    let curves = sig.curves.get_untracked();
    assert_eq!((curves.classifier.len(), curves.knn.len(), curves.linear.len()), (2, 2, 2), "{backbone:?}");
    let id = sig.run_id.get_untracked().expect("a saved run");
    let saved = store::load(&id).await.unwrap().expect("the last checkpoint");
    let model = TensorFile::from_bytes(&patchwork_app::train::export_model(&saved).await.unwrap()).unwrap();
    let (key, head) =
        if backbone == BackboneKind::Swin { ("swin_config", "head.fc.weight") } else { ("vit_config", "head.weight") };
    assert!(model.metadata.contains_key(key) && model.tensors.contains_key(head), "{backbone:?}: {:?}", model.metadata);
    let (step, m, names) = sig.confusion.get_untracked().expect("a confusion matrix");
    assert_eq!(names.len(), 10);
    assert_eq!(step, 20);
    assert_eq!((m.len(), m[0].len()), (10, 10));
    assert_eq!(m.iter().flatten().sum::<u32>(), 32, "every held-out image is counted once");
    // The labels are i % 10: each row holds that class's images.
    assert_eq!(m[0].iter().sum::<u32>(), 4);
    if let Some(id) = sig.run_id.get_untracked() {
        store::delete(&id).await.unwrap();
    }
}

#[wasm_bindgen_test]
async fn a_supervised_run_scores_its_classifier_and_draws_a_confusion_matrix() {
    supervised_run_scores_its_classifier(BackboneKind::Vit).await;
}

/// The same with a Swin backbone: its classifier, its pooled features' kNN and probe.
#[wasm_bindgen_test]
async fn a_supervised_swin_run_scores_its_classifier_and_its_features() {
    supervised_run_scores_its_classifier(BackboneKind::Swin).await;
}

#[wasm_bindgen_test]
async fn losing_the_gpu_device_stops_training_and_keeps_the_last_checkpoint() {
    let owner = Owner::new();
    owner.set();
    let Ok(gpu) = patchwork_compute::Gpu::new().await else {
        // No WebGPU in this browser: nothing to lose (the CI's Chromium has SwiftShader).
        return;
    };
    let data = Rc::new(TrainData { train: random_set(32, 9), test: random_set(16, 10), classes: ten() });
    let sig = signals();
    let form = TrainForm { steps: 12, batch: 4, checkpoint_every: 2, ..micro_form(Method::Dino) };
    // Destroy the device once the first checkpoint is saved, as the browser may at any time.
    let watcher = gpu.clone();
    wasm_bindgen_futures::spawn_local(async move {
        loop {
            if sig.progress.get_untracked().last_checkpoint.is_some() {
                watcher.destroy();
                return;
            }
            let p = js_sys::Promise::new(&mut |r, _| {
                web_sys::window().unwrap().set_timeout_with_callback_and_timeout_and_arguments_0(&r, 5).unwrap();
            });
            wasm_bindgen_futures::JsFuture::from(p).await.unwrap();
        }
    });
    patchwork_app::train::run_on(&gpu, form.clone(), None, data, RwSignal::new(Command::Run), sig).await;
    let status = sig.status.get_untracked();
    let Status::Failed(msg) = &status else { panic!("expected a failure, got {status:?}") };
    assert!(msg.contains("GPU device was lost") && msg.contains("the checkpoint at step 2 is kept"), "{msg}");
    let id = sig.run_id.get_untracked().unwrap();
    let saved = store::load(&id).await.unwrap().expect("the checkpoint before the loss");
    assert_eq!(saved.step, 2);
    // It resumes on the CPU backend.
    let sig2 = signals();
    let data = Rc::new(TrainData { train: random_set(32, 9), test: random_set(16, 10), classes: ten() });
    run(BackendKind::Cpu, form, Some(saved), data, RwSignal::new(Command::Run), sig2).await;
    assert!(matches!(sig2.status.get_untracked(), Status::Finished(_)), "{:?}", sig2.status.get_untracked());
    store::delete(&id).await.unwrap();
}

/// Every method's first steps on WebGPU give the CPU backend's losses (Chromium's WGSL
/// compiler is stricter than naga: a float literal it rejected once broke DINO here).
#[wasm_bindgen_test]
async fn every_method_trains_on_webgpu_as_on_the_cpu() {
    use patchwork_compute::train::{BackboneKind, RunConfig, Sampler, Schedule, Sizes, METHODS};
    let Ok(gpu) = patchwork_compute::Gpu::new().await else { return };
    let data = random_set(16, 11);
    let swin = Sizes { backbone: BackboneKind::Swin, ..Preset::Micro.sizes() };
    let runs = METHODS.iter().map(|info| (info.method, info.name.to_string(), Preset::Micro.sizes()));
    for (method, name, sizes) in runs.chain([(Method::Supervised, "supervised Swin".to_string(), swin)]) {
        let s = Schedule::defaults(method, "test", 1, 3, 4);
        let cfg = RunConfig::standard(method, &sizes, 16, 4).unwrap();
        let (mut cpu, mut dev) = (cfg.trainer(&Cpu, &s), cfg.trainer(&gpu, &s));
        let (mut rc, mut rg, lrs) = (s.data_rng(), s.data_rng(), s.lrs());
        let mut sampler = Sampler::new(0, 16);
        for (step, &lr) in lrs.iter().enumerate().take(2) {
            let idx = sampler.indices(step, 4);
            let a = cpu.step(&Cpu, &data, &idx, step, &mut rc, s.step_config(lr)).await;
            let b = dev.step(&gpu, &data, &idx, step, &mut rg, s.step_config(lr)).await;
            assert!(
                a.is_finite() && (a - b).abs() <= 1e-3 * a.abs().max(1e-3),
                "{name} step {step}: CPU {a}, WebGPU {b}"
            );
        }
    }
}

/// A picked folder: `ROOT/CLASS/IMAGE` paths give classes, a fifth is held out, every
/// picture becomes 28×28 grey (transparent pixels white); images in the root alone leave
/// the data unlabelled.
#[wasm_bindgen_test]
fn a_folder_of_class_subfolders_becomes_labelled_28_px_grey_data() {
    use patchwork_app::reconstruct::Picture;
    use patchwork_app::train::folder_data;
    let pic = |w: u32, h: u32, v: u8, a: u8| Picture::new(w, h, [v, v, v, a].repeat((w * h) as usize));
    let mut files = Vec::new();
    for i in 0..6 {
        files.push((format!("shoes/boot/{i}.png"), pic(40, 30, 0, 255)));
        files.push((format!("shoes/sandal/{i}.jpg"), pic(28, 28, 200, 255)));
    }
    files.push(("shoes/sandal/see-through.png".to_string(), pic(10, 10, 0, 0)));
    let d = folder_data(files).unwrap();
    assert_eq!(d.classes, vec!["boot".to_string(), "sandal".to_string()]);
    assert_eq!((d.train.images.len(), d.test.images.len()), (11, 2));
    assert!(d.labelled());
    let all: Vec<_> = d.train.images.iter().chain(&d.test.images).collect();
    assert!(all.iter().all(|im| (im.width, im.height, im.channels) == (28, 28, 1)));
    // The transparent picture is white; the boots black.
    assert!(all.iter().any(|im| im.data.iter().all(|&v| v == 1.0)));
    assert!(all.iter().any(|im| im.data.iter().all(|&v| v == 0.0)));
    let loose = folder_data(vec![("shoes/a.png".into(), pic(8, 8, 9, 255)), ("shoes/b.png".into(), pic(8, 8, 9, 255))])
        .unwrap();
    assert!(!loose.labelled() && loose.classes.is_empty());
    assert!(folder_data(vec![("x/y.png".into(), pic(8, 8, 9, 255))]).is_err());
}
