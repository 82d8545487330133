"""Teachers for distillation: the registry and safe loading.

Recipe teachers are trained from above the training loop, by
``trainables.training.teacher_cache.ensure_teacher`` (it runs the loop, which imports this
package to load teachers; this package imports nothing of the loop).
"""

from trainables.teachers.loading import Teacher, load_teacher
from trainables.teachers.registry import (
    BUILTIN_RECIPES,
    TeacherError,
    TeacherSpec,
    read_registry,
    recipe_hash,
    resolve_teacher,
    teacher_cache_dir,
)

__all__ = [
    "BUILTIN_RECIPES",
    "Teacher",
    "TeacherError",
    "TeacherSpec",
    "load_teacher",
    "read_registry",
    "recipe_hash",
    "resolve_teacher",
    "teacher_cache_dir",
]
