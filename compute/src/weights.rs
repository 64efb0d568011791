//! Named tensors on the host and their safetensors form. Names are timm's (or the official
//! method repositories'), so checkpoints move between Patchwork and PyTorch unchanged.
//! Floating dtypes f32, f16, bf16 and f64 load (converted to f32); i64/i32/u32 load as
//! integer tensors (labels, indices).
use std::collections::{BTreeMap, HashMap};
use std::fmt;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

/// A host tensor: f32 values, or integers kept exactly.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Data,
}

impl Tensor {
    pub fn f32(shape: Vec<usize>, values: Vec<f32>) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            values.len(),
            "shape {shape:?} does not fit {} values",
            values.len()
        );
        Tensor { shape, data: Data::F32(values) }
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    /// The values as f32 (integers converted).
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.data {
            Data::F32(v) => v.clone(),
            Data::I64(v) => v.iter().map(|x| *x as f32).collect(),
        }
    }
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            Data::F32(v) => Some(v),
            Data::I64(_) => None,
        }
    }
    pub fn as_i64(&self) -> Option<&[i64]> {
        match &self.data {
            Data::I64(v) => Some(v),
            Data::F32(_) => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum WeightsError {
    /// The bytes are not a safetensors file.
    Format(String),
    UnsupportedDtype {
        name: String,
        dtype: String,
    },
    Missing {
        names: Vec<String>,
    },
    Unexpected {
        names: Vec<String>,
    },
    Shape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    Config(String),
}

impl fmt::Display for WeightsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |v: &[String]| {
            let shown: Vec<&str> = v.iter().take(6).map(|s| s.as_str()).collect();
            let more = if v.len() > 6 { format!(" and {} more", v.len() - 6) } else { String::new() };
            format!("{}{more}", shown.join(", "))
        };
        match self {
            WeightsError::Format(e) => write!(f, "not a valid safetensors file: {e}"),
            WeightsError::UnsupportedDtype { name, dtype } => {
                write!(f, "tensor `{name}` has dtype {dtype}; only f32, f16, bf16, f64 (and integer inputs) load")
            }
            WeightsError::Missing { names } => {
                write!(f, "checkpoint is missing {} parameter(s): {}", names.len(), list(names))
            }
            WeightsError::Unexpected { names } => {
                write!(f, "checkpoint has {} unexpected tensor(s) for this model: {}", names.len(), list(names))
            }
            WeightsError::Shape { name, expected, found } => {
                write!(f, "parameter `{name}` has shape {found:?}, the model expects {expected:?}")
            }
            WeightsError::Config(e) => write!(f, "bad model config: {e}"),
        }
    }
}

impl std::error::Error for WeightsError {}

/// A safetensors file in memory: tensors by name plus the `__metadata__` strings.
#[derive(Clone, Debug, Default)]
pub struct TensorFile {
    pub tensors: BTreeMap<String, Tensor>,
    pub metadata: HashMap<String, String>,
}

fn convert(name: &str, view: &TensorView<'_>) -> Result<Tensor, WeightsError> {
    let bytes = view.data();
    let shape = view.shape().to_vec();
    let chunks = |n: usize| bytes.chunks_exact(n);
    let data = match view.dtype() {
        Dtype::F32 => Data::F32(chunks(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()),
        Dtype::F64 => Data::F32(chunks(8).map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32).collect()),
        Dtype::F16 => Data::F32(chunks(2).map(|b| half::f16::from_le_bytes(b.try_into().unwrap()).to_f32()).collect()),
        Dtype::BF16 => {
            Data::F32(chunks(2).map(|b| half::bf16::from_le_bytes(b.try_into().unwrap()).to_f32()).collect())
        }
        Dtype::I64 => Data::I64(chunks(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect()),
        Dtype::I32 => Data::I64(chunks(4).map(|b| i32::from_le_bytes(b.try_into().unwrap()) as i64).collect()),
        Dtype::U32 => Data::I64(chunks(4).map(|b| u32::from_le_bytes(b.try_into().unwrap()) as i64).collect()),
        other => return Err(WeightsError::UnsupportedDtype { name: name.into(), dtype: format!("{other:?}") }),
    };
    Ok(Tensor { shape, data })
}

impl TensorFile {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, WeightsError> {
        let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| WeightsError::Format(e.to_string()))?;
        let st = SafeTensors::deserialize(bytes).map_err(|e| WeightsError::Format(e.to_string()))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.iter() {
            tensors.insert(name.to_string(), convert(name, &view)?);
        }
        Ok(TensorFile { tensors, metadata: meta.metadata().clone().unwrap_or_default() })
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn load(path: &std::path::Path) -> Result<Self, WeightsError> {
        let bytes = std::fs::read(path).map_err(|e| WeightsError::Format(format!("{}: {e}", path.display())))?;
        Self::from_bytes(&bytes)
    }

    /// Serialise as safetensors (f32 and i64 tensors, names sorted).
    pub fn to_bytes(&self) -> Vec<u8> {
        struct Raw<'a>(Dtype, &'a [usize], Vec<u8>);
        impl safetensors::tensor::View for Raw<'_> {
            fn dtype(&self) -> Dtype {
                self.0
            }
            fn shape(&self) -> &[usize] {
                self.1
            }
            fn data(&self) -> std::borrow::Cow<'_, [u8]> {
                std::borrow::Cow::Borrowed(&self.2)
            }
            fn data_len(&self) -> usize {
                self.2.len()
            }
        }
        let views = self.tensors.iter().map(|(name, t)| {
            let raw = match &t.data {
                Data::F32(v) => Raw(Dtype::F32, &t.shape, bytemuck::cast_slice(v).to_vec()),
                Data::I64(v) => Raw(Dtype::I64, &t.shape, bytemuck::cast_slice(v).to_vec()),
            };
            (name.clone(), raw)
        });
        let meta = if self.metadata.is_empty() { None } else { Some(self.metadata.clone()) };
        safetensors::tensor::serialize(views, meta).expect("serialising in-memory tensors cannot fail")
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn save(&self, path: &std::path::Path) -> std::io::Result<()> {
        std::fs::write(path, self.to_bytes())
    }

    /// Check that exactly `expected` (name → shape) is present, and name what is not.
    pub fn check_names(
        &self,
        expected: &[(String, Vec<usize>)],
        prefix_filter: impl Fn(&str) -> bool,
    ) -> Result<(), WeightsError> {
        self.check_names_optional(expected, &[], prefix_filter)
    }

    /// [`TensorFile::check_names`], where `optional` tensors may be absent but, when
    /// present, must have their shape (e.g. MAE's fixed sin-cos tables).
    pub fn check_names_optional(
        &self,
        expected: &[(String, Vec<usize>)],
        optional: &[(String, Vec<usize>)],
        prefix_filter: impl Fn(&str) -> bool,
    ) -> Result<(), WeightsError> {
        let want: HashMap<&str, &Vec<usize>> = expected.iter().chain(optional).map(|(n, s)| (n.as_str(), s)).collect();
        let missing: Vec<String> =
            expected.iter().filter(|(n, _)| !self.tensors.contains_key(n)).map(|(n, _)| n.clone()).collect();
        if !missing.is_empty() {
            return Err(WeightsError::Missing { names: missing });
        }
        let unexpected: Vec<String> =
            self.tensors.keys().filter(|n| prefix_filter(n) && !want.contains_key(n.as_str())).cloned().collect();
        if !unexpected.is_empty() {
            return Err(WeightsError::Unexpected { names: unexpected });
        }
        for (name, shape) in expected.iter().chain(optional) {
            let Some(t) = self.tensors.get(name) else { continue };
            if &t.shape != shape {
                return Err(WeightsError::Shape {
                    name: name.clone(),
                    expected: shape.clone(),
                    found: t.shape.clone(),
                });
            }
            if t.as_f32().is_none() {
                return Err(WeightsError::UnsupportedDtype { name: name.clone(), dtype: "integer".into() });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safetensors_round_trip_keeps_names_values_and_metadata() {
        let mut f = TensorFile::default();
        f.tensors
            .insert("blocks.0.attn.qkv.weight".into(), Tensor::f32(vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.5]));
        f.tensors.insert("input.labels".into(), Tensor { shape: vec![2], data: Data::I64(vec![3, 7]) });
        f.metadata.insert("format".into(), "patchwork-fixture/1".into());
        let back = TensorFile::from_bytes(&f.to_bytes()).unwrap();
        assert_eq!(back.tensors, f.tensors);
        assert_eq!(back.metadata, f.metadata);
    }

    #[test]
    fn check_names_reports_missing_unexpected_and_shape() {
        let mut f = TensorFile::default();
        f.tensors.insert("a".into(), Tensor::f32(vec![2], vec![0.0; 2]));
        f.tensors.insert("zzz".into(), Tensor::f32(vec![1], vec![0.0]));
        let exp = vec![("a".to_string(), vec![2]), ("b".to_string(), vec![1])];
        let e = f.check_names(&exp, |_| true).unwrap_err();
        assert!(e.to_string().contains("missing 1 parameter(s): b"), "{e}");
        f.tensors.insert("b".into(), Tensor::f32(vec![1], vec![0.0]));
        let e = f.check_names(&exp, |_| true).unwrap_err();
        assert!(e.to_string().contains("unexpected tensor(s) for this model: zzz"), "{e}");
        f.tensors.remove("zzz");
        f.tensors.insert("a".into(), Tensor::f32(vec![1, 2], vec![0.0; 2]));
        let e = f.check_names(&exp, |_| true).unwrap_err();
        assert!(e.to_string().contains("`a` has shape [1, 2], the model expects [2]"), "{e}");
    }

    #[test]
    fn optional_names_may_be_absent_but_not_misshapen() {
        let mut f = TensorFile::default();
        f.tensors.insert("a".into(), Tensor::f32(vec![2], vec![0.0; 2]));
        let exp = vec![("a".to_string(), vec![2])];
        let opt = vec![("pos".to_string(), vec![3])];
        f.check_names_optional(&exp, &opt, |_| true).unwrap();
        f.tensors.insert("pos".into(), Tensor::f32(vec![3], vec![0.0; 3]));
        f.check_names_optional(&exp, &opt, |_| true).unwrap();
        f.tensors.insert("pos".into(), Tensor::f32(vec![4], vec![0.0; 4]));
        let e = f.check_names_optional(&exp, &opt, |_| true).unwrap_err();
        assert!(e.to_string().contains("`pos` has shape [4], the model expects [3]"), "{e}");
    }

    #[test]
    fn unsupported_dtypes_are_named() {
        struct U8s(Vec<u8>);
        impl safetensors::tensor::View for &U8s {
            fn dtype(&self) -> Dtype {
                Dtype::U8
            }
            fn shape(&self) -> &[usize] {
                &[4]
            }
            fn data(&self) -> std::borrow::Cow<'_, [u8]> {
                std::borrow::Cow::Borrowed(&self.0)
            }
            fn data_len(&self) -> usize {
                4
            }
        }
        let t = U8s(vec![1, 2, 3, 4]);
        let bytes = safetensors::tensor::serialize([("norm.weight", &t)], None).unwrap();
        let e = TensorFile::from_bytes(&bytes).unwrap_err().to_string();
        assert!(e.contains("`norm.weight` has dtype U8"), "{e}");
    }

    #[test]
    fn garbage_bytes_are_a_format_error() {
        let e = TensorFile::from_bytes(b"hello, this is not safetensors").unwrap_err();
        assert!(matches!(e, WeightsError::Format(_)), "{e}");
    }
}
