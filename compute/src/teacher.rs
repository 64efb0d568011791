//! The momentum teacher shared by the self-distillation methods (DINO, iBOT, EsViT, MoBY,
//! MoCo v3): a copy of the student that follows it by an exponential moving average,
//! `teacher ← m · teacher + (1 − m) · student`, never by gradients.
use crate::backend::Backend;
use crate::params::Params;

/// Largest parameter the GPU's EMA takes in one dispatch (64 values per workgroup, at most
/// 65 535 workgroups).
const MAX_EMA_LEN: usize = 64 * 65_535;

/// A fresh teacher: new buffers holding the student's values (`load_state_dict`).
pub fn copy_of<B: Backend>(be: &B, student: &Params<B>) -> Params<B> {
    let out = student.zeros_like(be);
    for (t, s) in out.list.iter().zip(&student.list) {
        be.copy(&s.buf, 0, &t.buf, 0, s.shape.iter().product());
    }
    out
}

/// `teacher ← momentum · teacher + (1 − momentum) · student`, parameter by parameter (same
/// names, same order). The centre update with one row is exactly this average.
pub fn ema_update<B: Backend>(be: &B, teacher: &Params<B>, student: &Params<B>, momentum: f32) {
    for (t, s) in teacher.list.iter().zip(&student.list) {
        assert_eq!(t.name, s.name, "teacher and student parameters differ");
        let n: usize = t.shape.iter().product();
        assert!(n <= MAX_EMA_LEN, "{} has {n} values; the EMA takes at most {MAX_EMA_LEN}", t.name);
        be.center_update(&s.buf, &t.buf, 1, n, momentum);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::Cpu;

    #[test]
    fn ema_moves_the_teacher_toward_the_student() {
        let be = Cpu;
        let mut student = Params::new();
        student.push("w", vec![2, 2], be.upload(&[1.0, 2.0, 3.0, 4.0]));
        let teacher = copy_of(&be, &student);
        be.write(&student.list[0].buf, &[2.0, 2.0, 2.0, 2.0]);
        ema_update(&be, &teacher, &student, 0.75);
        let t = crate::block_on(be.read(&teacher.list[0].buf));
        let want = [1.25, 2.0, 2.75, 3.5];
        assert!(t.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6), "{t:?}");
        // momentum 1 freezes the teacher
        ema_update(&be, &teacher, &student, 1.0);
        assert_eq!(crate::block_on(be.read(&teacher.list[0].buf)), t);
    }
}
