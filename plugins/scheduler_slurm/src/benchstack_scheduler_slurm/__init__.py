"""benchstack's Slurm scheduler: sbatch submission, srun steps per process, adopt an allocation."""
