//! A model's parameters (or their gradients, or optimiser moments) on a backend, in a
//! fixed order, each under its timm name.
use std::collections::HashMap;

use crate::backend::Backend;
use crate::weights::{Tensor, TensorFile};

pub struct Param<B: Backend> {
    pub name: String,
    pub shape: Vec<usize>,
    pub buf: B::Buf,
}

pub struct Params<B: Backend> {
    pub list: Vec<Param<B>>,
    index: HashMap<String, usize>,
}

impl<B: Backend> Params<B> {
    pub fn new() -> Self {
        Params { list: Vec::new(), index: HashMap::new() }
    }

    pub fn push(&mut self, name: impl Into<String>, shape: Vec<usize>, buf: B::Buf) {
        let name = name.into();
        assert!(!self.index.contains_key(&name), "parameter {name} twice");
        self.index.insert(name.clone(), self.list.len());
        self.list.push(Param { name, shape, buf });
    }

    pub fn get(&self, name: &str) -> &B::Buf {
        &self.list[*self.index.get(name).unwrap_or_else(|| panic!("no parameter named {name}"))].buf
    }

    pub fn try_get(&self, name: &str) -> Option<&B::Buf> {
        self.index.get(name).map(|i| &self.list[*i].buf)
    }

    /// Zeroed buffers of the same names and shapes (gradients, Adam moments).
    pub fn zeros_like(&self, be: &B) -> Self {
        let mut out = Params::new();
        for p in &self.list {
            out.push(p.name.clone(), p.shape.clone(), be.alloc(p.shape.iter().product()));
        }
        out
    }

    pub fn fill(&self, be: &B, value: f32) {
        for p in &self.list {
            be.fill(&p.buf, value);
        }
    }

    pub fn numel(&self) -> usize {
        self.list.iter().map(|p| p.shape.iter().product::<usize>()).sum()
    }

    /// Check that `file` holds exactly the parameters `shapes` lists (tensors of a
    /// fixture's `input.`/`expect.` are ignored; `optional` ones may be absent) and upload
    /// them. Errors name the missing, unexpected or misshapen tensors.
    pub fn load(
        be: &B,
        shapes: &[(String, Vec<usize>)],
        optional: &[(String, Vec<usize>)],
        file: &TensorFile,
    ) -> Result<Self, crate::weights::WeightsError> {
        file.check_names_optional(shapes, optional, |n| !n.starts_with("input.") && !n.starts_with("expect."))?;
        Ok(Self::upload(be, shapes, file))
    }

    /// Upload `file`'s tensors named as `shapes` lists them (checked beforehand).
    pub fn upload(be: &B, shapes: &[(String, Vec<usize>)], file: &TensorFile) -> Self {
        let mut out = Params::new();
        for (name, shape) in shapes {
            let t = &file.tensors[name];
            out.push(name.clone(), shape.clone(), be.upload(&t.to_f32()));
        }
        out
    }

    /// Read every buffer back, as named host tensors (`prefix` prepended to names).
    pub async fn download(&self, be: &B, prefix: &str) -> TensorFile {
        let mut file = TensorFile::default();
        for p in &self.list {
            let v = be.read(&p.buf).await;
            file.tensors.insert(format!("{prefix}{}", p.name), Tensor::f32(p.shape.clone(), v));
        }
        file
    }
}

impl<B: Backend> Default for Params<B> {
    fn default() -> Self {
        Self::new()
    }
}
