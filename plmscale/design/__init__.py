"""Study design: which runs to train next (adaptive IsoFLOP rounds), which design to choose before training
(the planner), and how run-selection strategies compare on a finished pool (replay). Above the scaling
layer: designs are judged by the fits scaling/ makes."""
