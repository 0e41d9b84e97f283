"""The foundation every stage builds on; nothing here knows a stage.

Modules: :mod:`.errors` (user-facing errors), :mod:`.registry` (the ``type`` registry class),
:mod:`.config_files` (YAML files, ``base:`` presets, ``key=value`` overrides, layers and the retype
rule), :mod:`.config_merge` (typing one section), :mod:`.schema` (a command's schema and the one
loader), :mod:`.bounds` (valid ranges), :mod:`.schedules`, :mod:`.paths` (output paths),
:mod:`.io` (atomic files, staged folders), :mod:`.checkpoint` (safetensors + JSON), :mod:`.interrupt`
(Ctrl-C at a step boundary), :mod:`.device`, :mod:`.media` (images, videos), :mod:`.quiet`.

May import: the standard library and third-party packages only (no other ``text3d`` package).
"""
