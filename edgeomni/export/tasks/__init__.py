"""Export tasks: one module per recipe `task`, each with `run(recipe, work, bundle, report)`."""
