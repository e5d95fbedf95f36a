//! The paper's six activations, with PyTorch's definitions and backward formulas
//! (`torch.nn.functional`; gradients at the kinks follow PyTorch: relu'(0) = 0,
//! leaky_relu'(0) = 0.01, elu'(0) = 1).

use crate::math::{expm1, sigmoid, tanh};

/// `F.leaky_relu` default negative slope.
pub const LEAKY_RELU_SLOPE: f32 = 0.01;
/// `F.elu` default alpha.
pub const ELU_ALPHA: f32 = 1.0;
/// `F.selu` scale (lambda).
pub const SELU_SCALE: f32 = 1.050_700_987_355_480_5_f64 as f32;
/// `F.selu` alpha.
pub const SELU_ALPHA: f32 = 1.673_263_242_354_377_2_f64 as f32;

crate::register_activation!(
    "relu",
    forward: |x| if x > 0.0 { x } else { 0.0 },
    derivative: |x, _y| if x > 0.0 { 1.0 } else { 0.0 },
);

crate::register_activation!(
    "sigmoid",
    forward: |x| sigmoid(x),
    derivative: |_x, y| y * (1.0 - y),
);

crate::register_activation!(
    "tanh",
    forward: |x| tanh(x),
    derivative: |_x, y| 1.0 - y * y,
);

crate::register_activation!(
    "leaky_relu",
    forward: |x| if x > 0.0 { x } else { LEAKY_RELU_SLOPE * x },
    derivative: |x, _y| if x > 0.0 { 1.0 } else { LEAKY_RELU_SLOPE },
);

crate::register_activation!(
    "elu",
    forward: |x| if x > 0.0 { x } else { ELU_ALPHA * expm1(x) },
    derivative: |x, y| if x > 0.0 { 1.0 } else { y + ELU_ALPHA },
);

crate::register_activation!(
    "selu",
    forward: |x| if x > 0.0 { SELU_SCALE * x } else { SELU_SCALE * SELU_ALPHA * expm1(x) },
    derivative: |x, y| if x > 0.0 { SELU_SCALE } else { y + SELU_SCALE * SELU_ALPHA },
);

#[cfg(test)]
mod tests {
    use crate::{lookup, registered_names, PAPER_POOL};

    /// Values computed by hand from the definitions (and checked against PyTorch 2.x).
    #[test]
    fn built_ins_match_hand_computed_values() {
        let cases: &[(&str, f32, f32)] = &[
            ("relu", -1.5, 0.0),
            ("relu", 2.0, 2.0),
            ("sigmoid", 0.0, 0.5),
            ("sigmoid", 2.0, 0.880_797_1),
            ("tanh", 1.0, 0.761_594_2),
            ("leaky_relu", -2.0, -0.02),
            ("leaky_relu", 3.0, 3.0),
            ("elu", -1.0, -0.632_120_56),
            ("elu", 0.5, 0.5),
            ("selu", -1.0, -1.111_330_7),
            ("selu", 1.0, 1.050_701),
        ];
        for &(name, x, want) in cases {
            let got = (lookup(name).unwrap().forward)(x);
            assert!(
                (got - want).abs() < 1e-6,
                "{name}({x}) = {got}, want {want}"
            );
        }
    }

    /// Derivatives against central finite differences, away from kinks.
    #[test]
    fn derivatives_match_finite_differences() {
        for name in PAPER_POOL {
            let xs = [-3.0f32, -0.7, -0.1, 0.2, 0.9, 2.5];
            crate::testing::check_derivative(lookup(name).unwrap(), &xs, 2e-3).unwrap();
        }
    }

    #[test]
    fn slice_forms_agree_with_scalar_forms() {
        for name in PAPER_POOL {
            crate::testing::check_slices_match_scalar(lookup(name).unwrap()).unwrap();
        }
    }

    /// The checks themselves fail on a wrong derivative.
    #[test]
    fn the_checks_catch_a_wrong_derivative() {
        let act = lookup("tanh").unwrap();
        let wrong = crate::Activation {
            derivative: |_x, y| 1.0 - y,
            ..*act
        };
        assert!(crate::testing::check_derivative(&wrong, &[0.5], 2e-3).is_err());
        assert!(crate::testing::check_slices_match_scalar(&wrong).is_err());
    }

    /// Every vector level the CPU supports (AVX2, AVX-512) gives bit-identical results to
    /// the portable loops.
    #[test]
    fn every_supported_level_agrees_with_the_portable_loops_bit_for_bit() {
        use crate::activation::{set_max_simd_level, supported_simd_levels, SimdLevel};
        let xs: Vec<f32> = (-3000..3000).map(|i| i as f32 * 0.0131).collect();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for act in inventory::iter::<crate::Activation> {
            let name = act.name;
            let run = |level: SimdLevel| {
                set_max_simd_level(level);
                let zero = vec![0.0; xs.len()];
                let (mut y, mut d) = (vec![0.0; xs.len()], vec![0.0; xs.len()]);
                (act.apply_with_derivative)(&xs, &zero, &mut y, &mut d);
                let mut y2 = vec![0.0; xs.len()];
                (act.apply)(&xs, &zero, &mut y2);
                set_max_simd_level(SimdLevel::Avx512);
                (bits(&y), bits(&d), bits(&y2))
            };
            let portable = run(SimdLevel::Portable);
            for level in supported_simd_levels() {
                let got = run(level);
                assert_eq!(got.0, portable.0, "{name} values at {level:?}");
                assert_eq!(got.1, portable.1, "{name} derivatives at {level:?}");
                assert_eq!(got.2, portable.2, "{name} values-only at {level:?}");
            }
        }
    }

    #[test]
    fn kinks_follow_pytorch() {
        let d = |n: &str, x: f32| {
            let a = lookup(n).unwrap();
            (a.derivative)(x, (a.forward)(x))
        };
        assert_eq!(d("relu", 0.0), 0.0);
        assert_eq!(d("leaky_relu", 0.0), 0.01);
        assert_eq!(d("elu", 0.0), 1.0);
    }

    #[test]
    fn unknown_name_lists_registered_names() {
        let err = lookup("swish2").unwrap_err().to_string();
        assert!(err.contains("swish2"), "{err}");
        for name in PAPER_POOL {
            assert!(err.contains(name), "{err}");
        }
        assert!(registered_names().len() >= 6);
    }
}
