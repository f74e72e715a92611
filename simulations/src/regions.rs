//! Twenty regions where an edge mesh would run, and the round-trip time between any two:
//! 2 × great-circle distance / (200 km/ms, light in fibre) × 1.4 (routes are not straight),
//! plus 1 ms. Within a region the RTT is 1 ms.

/// (name, latitude, longitude) of each region's main city.
pub const REGIONS: [(&str, f64, f64); 20] = [
    ("us-east", 39.0, -77.5),
    ("us-central", 41.9, -87.6),
    ("us-west", 37.4, -122.1),
    ("ca-central", 45.5, -73.6),
    ("sa-east", -23.5, -46.6),
    ("mx-central", 19.4, -99.1),
    ("eu-west", 53.3, -6.3),
    ("eu-central", 50.1, 8.7),
    ("eu-north", 59.3, 18.1),
    ("eu-south", 45.5, 9.2),
    ("me-central", 25.3, 55.3),
    ("af-south", -26.2, 28.0),
    ("ap-south", 19.1, 72.9),
    ("ap-southeast", 1.35, 103.8),
    ("ap-east", 22.3, 114.2),
    ("ap-northeast", 35.7, 139.7),
    ("ap-northeast-2", 37.6, 127.0),
    ("au-southeast", -33.9, 151.2),
    ("ap-southeast-3", -6.2, 106.8),
    ("cn-north", 39.9, 116.4),
];

fn distance_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (la1, lo1, la2, lo2) = (a.0.to_radians(), a.1.to_radians(), b.0.to_radians(), b.1.to_radians());
    let h = ((la2 - la1) / 2.0).sin().powi(2) + la1.cos() * la2.cos() * ((lo2 - lo1) / 2.0).sin().powi(2);
    2.0 * 6_371.0 * h.sqrt().asin()
}

/// Round-trip time in ms between regions `a` and `b` (indexes into [`REGIONS`]).
pub fn rtt_ms(a: usize, b: usize) -> f64 {
    if a == b {
        return 1.0;
    }
    let (ra, rb) = (REGIONS[a], REGIONS[b]);
    2.0 * distance_km((ra.1, ra.2), (rb.1, rb.2)) / 200.0 * 1.4 + 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtts_are_symmetric_and_plausible() {
        // Frankfurt–Singapore is about 160 ms in practice; Virginia–Oregon about 60–70 ms.
        let (fra, sin, iad, sfo) = (7, 13, 0, 2);
        assert!((120.0..200.0).contains(&rtt_ms(fra, sin)), "{}", rtt_ms(fra, sin));
        assert!((40.0..90.0).contains(&rtt_ms(iad, sfo)), "{}", rtt_ms(iad, sfo));
        assert_eq!(rtt_ms(3, 11), rtt_ms(11, 3));
        let worst = (0..20).flat_map(|a| (0..20).map(move |b| rtt_ms(a, b))).fold(0.0, f64::max);
        assert!(worst < 400.0, "{worst}");
    }
}
