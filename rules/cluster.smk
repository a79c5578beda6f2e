# placeholder: the data helper replaces this file
