# placeholder: the grid helper replaces this file
def stage_targets_train():
    return []
