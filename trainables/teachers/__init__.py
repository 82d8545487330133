"""Teachers for distillation: the registry and safe loading (``cache`` trains recipes).

``trainables.teachers.cache.ensure_teacher`` is not re-exported here: it runs the training
loop, which itself imports this package to load teachers.
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
