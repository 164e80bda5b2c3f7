"""Files: slides, the CSV/mask/prediction formats, other tools' files, the project and its store."""
