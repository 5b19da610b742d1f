//! Agents that stand for other devices: an agent paced to a device profile
//! (`pace_to_profile`) answers at that device's profiled latency, charges its profiled power,
//! and says so in its announcement and results.

use slim_client::{client::Reply, samples::family_samples};
use slim_protocol::{DeviceProfile, InferRequest};
use slim_tests::{models_dir, repo_root, spec, start, ANSWER_TIMEOUT};

const SLOWDOWN: f32 = 40.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_paced_to_a_jetson_profile_takes_its_latency_and_power_and_announces_it() {
    let profile_path = repo_root().join("profiles/jetson-orin-nano.toml");
    let raw: DeviceProfile =
        toml::from_str(&std::fs::read_to_string(&profile_path).unwrap()).unwrap();
    let emulated = raw.slowed(SLOWDOWN);
    let mut spec = spec(&[SLOWDOWN]);
    spec.agent_profiles = vec![profile_path];
    spec.agent_paced = vec![true];
    let cluster = start(spec).await;
    let info = slim_tests::online_agent_status(&cluster).await;
    let emulation = info.emulation.expect("the agent says it emulates a device");
    assert_eq!(emulation.slowdown, SLOWDOWN);
    assert_eq!(emulation.profile.as_deref(), Some("jetson-orin-nano"));
    assert_eq!(
        info.concurrency,
        Some(1),
        "the Orin Nano profile runs one batch at a time (its max_instances), whatever the host's cores"
    );
    let published = info
        .profile
        .expect("the paced device's profile is published");
    assert_eq!(
        published, raw,
        "published at the device's own speed; routers apply the slowdown once"
    );

    let client = slim_tests::client(&cluster, &[]).await;
    let samples = family_samples(&models_dir(), "digits").unwrap();
    for (i, sample) in samples.iter().take(6).enumerate() {
        let width = if i % 2 == 0 { 1.0 } else { 0.25 };
        let mut request = InferRequest::new(format!("paced-{i}"), "digits", sample.input.clone());
        request.width = Some(width);
        let Reply::Result(result) = client.request(request, ANSWER_TIMEOUT).await.unwrap() else {
            panic!("expected a result")
        };
        assert!(result.emulated, "results of a paced agent are flagged");
        assert_eq!(
            result.top_k[0].class,
            sample.label.unwrap(),
            "real inference"
        );
        let (target_ms, power_w) = emulated
            .cost("digits", width, result.batch_size)
            .expect("the profile prices digits");
        // An unpaced digits batch takes about a millisecond on this host; the paced one takes
        // the emulated device's latency (tens of milliseconds at this slowdown).
        assert!(
            result.timings.compute_ms >= target_ms * 0.999,
            "width {width} batch {}: compute {} ms below the profile's {target_ms} ms",
            result.batch_size,
            result.timings.compute_ms
        );
        let expected_j = power_w * result.timings.compute_ms / 1000.0 / result.batch_size as f32;
        assert!(
            (result.energy_j - expected_j).abs() <= expected_j * 1e-3,
            "energy {} J, the profile's power over the paced time gives {expected_j} J",
            result.energy_j
        );
    }
    cluster.shutdown().await;
}
